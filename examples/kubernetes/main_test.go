package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
)

func TestMain(m *testing.M) { rabbittest.Main(m) }

// manifest is the part of a Kubernetes object the checks read.
type manifest struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Template struct {
			Spec struct {
				TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
				Containers                    []struct {
					Ports []struct {
						ContainerPort int `yaml:"containerPort"`
					} `yaml:"ports"`
					LivenessProbe  *probe `yaml:"livenessProbe"`
					ReadinessProbe *probe `yaml:"readinessProbe"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
		ScaleTargetRef struct {
			Name string `yaml:"name"`
		} `yaml:"scaleTargetRef"`
		Triggers []struct {
			Type              string            `yaml:"type"`
			Metadata          map[string]string `yaml:"metadata"`
			AuthenticationRef struct {
				Name string `yaml:"name"`
			} `yaml:"authenticationRef"`
		} `yaml:"triggers"`
	} `yaml:"spec"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port int    `yaml:"port"`
	} `yaml:"httpGet"`
}

func load(t *testing.T, path string) map[string]manifest {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]manifest{}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(false)
	for {
		var m manifest
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if m.APIVersion == "" || m.Kind == "" || m.Metadata.Name == "" {
			t.Fatalf("%s: an object without apiVersion, kind or name: %+v", path, m)
		}
		out[m.Kind] = m
	}
	return out
}

// TestManifestsMatchTheService: the Deployment probes the paths and port
// the program serves and gives it longer than its drain; the ScaledObject
// scales that Deployment on the route's queue, authenticated.
func TestManifestsMatchTheService(t *testing.T) {
	d, ok := load(t, "deployment.yaml")["Deployment"]
	if !ok {
		t.Fatal("deployment.yaml has no Deployment")
	}
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	c := pod.Containers[0]
	port := 0
	if _, err := fmt.Sscanf(httpAddr, ":%d", &port); err != nil {
		t.Fatal(err)
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != livePath || c.LivenessProbe.HTTPGet.Port != port {
		t.Errorf("liveness probe %+v, want %s on %d", c.LivenessProbe, livePath, port)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != readyPath || c.ReadinessProbe.HTTPGet.Port != port {
		t.Errorf("readiness probe %+v, want %s on %d", c.ReadinessProbe, readyPath, port)
	}
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != port {
		t.Errorf("ports %+v", c.Ports)
	}
	if grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second; grace <= drainTimeout {
		t.Errorf("terminationGracePeriodSeconds %v, not longer than the drain %v", grace, drainTimeout)
	}
	keda := load(t, "scaledobject.yaml")
	so, ok := keda["ScaledObject"]
	if !ok {
		t.Fatal("scaledobject.yaml has no ScaledObject")
	}
	if so.Spec.ScaleTargetRef.Name != d.Metadata.Name {
		t.Errorf("the ScaledObject scales %q, not the Deployment %q", so.Spec.ScaleTargetRef.Name, d.Metadata.Name)
	}
	if len(so.Spec.Triggers) != 1 {
		t.Fatalf("%d triggers", len(so.Spec.Triggers))
	}
	tr := so.Spec.Triggers[0]
	if tr.Type != "rabbitmq" || tr.Metadata["queueName"] != queueName || tr.Metadata["mode"] != "QueueLength" || tr.Metadata["value"] == "" {
		t.Errorf("trigger %+v: want the rabbitmq scaler on %q by QueueLength", tr, queueName)
	}
	if auth, ok := keda["TriggerAuthentication"]; !ok || tr.AuthenticationRef.Name != auth.Metadata.Name {
		t.Errorf("the trigger's authenticationRef %q names no TriggerAuthentication", tr.AuthenticationRef.Name)
	}
}

// TestProbesFollowTheService (in the package's own vhost, deleted with
// its queues when the tests end): liveness is 200 before the broker answers
// and while the service runs, readiness only once it consumes; after Run
// returns, liveness fails.
func TestProbesFollowTheService(t *testing.T) {
	b := rabbittest.Shared(t)
	c, err := conn.New(b.URL, conn.Config{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := newService(c)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(probes(r))
	defer srv.Close()
	status := func(path string) int {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	if status(livePath) != 200 || status(readyPath) != 503 {
		t.Fatalf("before the broker: live %d, ready %d; want 200, 503", status(livePath), status(readyPath))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Open(ctx); err != nil {
		t.Fatal(err)
	}
	runCtx, sigterm := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- r.Run(runCtx) }()
	if err := r.WaitRunning(ctx); err != nil {
		t.Fatal(err)
	}
	rabbittest.Eventually(t, 10*time.Second, "ready", func() bool { return status(readyPath) == 200 })
	sigterm()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	if got := status(livePath); got != 503 {
		t.Fatalf("liveness after Run returned: %d", got)
	}
	_ = c.Close(ctx) // the package's vhost, and the queues in it, go when the tests end
}
