package payload

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
)

const aesGCM = "aes-256-gcm"

// Keys gives the encryption keys, at run time, so they rotate: new
// messages are sealed with the current key, and a message is opened with
// the key its warren-key-id names for as long as Key still gives it.
// Keys are 32 bytes (AES-256).
type Keys interface {
	// Current is the key new messages are sealed with, and its id.
	Current(ctx context.Context) (id string, key []byte, err error)
	// Key is the key of id; an error wrapping ErrUnknownKey when it is not
	// kept (any more).
	Key(ctx context.Context, id string) ([]byte, error)
}

// StaticKeys is a Keys of fixed keys: Current names the one new messages
// use; the others open older messages. Safe for concurrent use; Rotate
// makes another current.
type StaticKeys struct {
	mu      sync.RWMutex
	current string
	keys    map[string][]byte
}

// NewStaticKeys returns keys (id to 32-byte key) with current sealing new
// messages.
func NewStaticKeys(current string, keys map[string][]byte) (*StaticKeys, error) {
	k := &StaticKeys{keys: map[string][]byte{}}
	for id, key := range keys {
		if err := k.Add(id, key); err != nil {
			return nil, err
		}
	}
	if err := k.Rotate(current); err != nil {
		return nil, err
	}
	return k, nil
}

// Add keeps key under id (32 bytes).
func (k *StaticKeys) Add(id string, key []byte) error {
	if id == "" || len(key) != 32 {
		return fmt.Errorf("payload: key %q: want an id and 32 bytes (AES-256), got %d", id, len(key))
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys[id] = append([]byte(nil), key...)
	return nil
}

// Rotate makes id the key new messages are sealed with.
func (k *StaticKeys) Rotate(id string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.keys[id]; !ok {
		return fmt.Errorf("%w: %q", ErrUnknownKey, id)
	}
	k.current = id
	return nil
}

// Forget drops id: messages sealed with it can no longer be opened.
func (k *StaticKeys) Forget(id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.keys, id)
}

// Current implements Keys.
func (k *StaticKeys) Current(context.Context) (string, []byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	key, ok := k.keys[k.current]
	if !ok {
		return "", nil, fmt.Errorf("%w: the current key %q", ErrUnknownKey, k.current)
	}
	return k.current, key, nil
}

// Key implements Keys.
func (k *StaticKeys) Key(_ context.Context, id string) ([]byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	key, ok := k.keys[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKey, id)
	}
	return key, nil
}

// Encryption seals bodies with AES-256-GCM (the standard library's): a
// random 12-byte nonce, then the ciphertext and its tag, authenticated with
// the key id as additional data (a body cannot be passed off under another
// key's id).
type Encryption struct {
	Keys Keys
}

func aead(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("payload: an AES-256 key is 32 bytes, got %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func (e *Encryption) seal(ctx context.Context, body []byte) (string, []byte, error) {
	id, key, err := e.Keys.Current(ctx)
	if err != nil {
		return "", nil, err
	}
	a, err := aead(key)
	if err != nil {
		return "", nil, err
	}
	out := make([]byte, a.NonceSize(), a.NonceSize()+len(body)+a.Overhead())
	if _, err := rand.Read(out); err != nil {
		return "", nil, err
	}
	return id, a.Seal(out, out, body, []byte(id)), nil
}

func (e *Encryption) open(ctx context.Context, id string, body []byte) ([]byte, error) {
	if id == "" {
		return nil, fmt.Errorf("%w: no %s header", ErrUnknownKey, HeaderKeyID)
	}
	key, err := e.Keys.Key(ctx, id)
	if err != nil {
		if errors.Is(err, ErrUnknownKey) {
			return nil, err
		}
		return nil, fmt.Errorf("payload: key %q: %w", id, err)
	}
	a, err := aead(key)
	if err != nil {
		return nil, err
	}
	if len(body) < a.NonceSize()+a.Overhead() {
		return nil, fmt.Errorf("%w: %d bytes", ErrTampered, len(body))
	}
	plain, err := a.Open(nil, body[:a.NonceSize()], body[a.NonceSize():], []byte(id))
	if err != nil {
		return nil, fmt.Errorf("%w: key %q", ErrTampered, id)
	}
	return plain, nil
}
