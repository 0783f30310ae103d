package payload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// DirStore is a Store in a directory of one host (every producer and
// consumer on that host, or on a shared filesystem). Put writes a
// temporary file and renames it, so a blob is whole or absent.
type DirStore struct {
	Dir string
}

var blobID = regexp.MustCompile(`^[0-9a-f]{32}$`)

func (d DirStore) path(id string) (string, error) {
	if d.Dir == "" {
		return "", errors.New("payload: DirStore has no Dir")
	}
	if !blobID.MatchString(id) {
		return "", fmt.Errorf("%w: %q is not a claim check id", ErrBlobNotFound, id)
	}
	return filepath.Join(d.Dir, id), nil
}

// Put implements Store.
func (d DirStore) Put(ctx context.Context, id string, body io.Reader) error {
	p, err := d.path(id)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(d.Dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(d.Dir, ".put-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after a successful rename, nothing is there
	if _, err := io.Copy(f, readerWithContext{ctx, body}); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), p)
}

// Get implements Store.
func (d DirStore) Get(_ context.Context, id string) (io.ReadCloser, error) {
	p, err := d.path(id)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrBlobNotFound, id)
	}
	return f, err
}

// Delete implements Deleter; a blob already gone is no error.
func (d DirStore) Delete(_ context.Context, id string) error {
	p, err := d.path(id)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Cleanup implements Store: blobs (and abandoned temporary files) last
// written before olderThan are deleted.
func (d DirStore) Cleanup(ctx context.Context, olderThan time.Time) (int, error) {
	entries, err := os.ReadDir(d.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		info, err := e.Info()
		if err != nil || e.IsDir() || info.ModTime().After(olderThan) {
			continue
		}
		if err := os.Remove(filepath.Join(d.Dir, e.Name())); err == nil {
			n++
		}
	}
	return n, nil
}

// readerWithContext stops a copy when ctx ends.
type readerWithContext struct {
	ctx context.Context
	r   io.Reader
}

func (r readerWithContext) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
