package rabbittest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// StartCluster starts n disposable nodes and joins the others to the first
// (rabbitmqctl join_cluster). Every node is killed when t ends.
func StartCluster(t testing.TB, n int) []*Node {
	t.Helper()
	nodes := make([]*Node, n)
	for i := range nodes {
		nodes[i] = StartNode(t, NodeOptions{})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, node := range nodes[1:] {
		for _, args := range [][]string{{"stop_app"}, {"reset"}, {"join_cluster", nodes[0].Name}} {
			if _, err := node.Ctl(ctx, args...); err != nil {
				t.Fatalf("rabbittest: cluster %s: %v", node.Name, err)
			}
		}
		if err := node.StartApp(ctx); err != nil {
			t.Fatalf("rabbittest: cluster %s start_app: %v", node.Name, err)
		}
	}
	out, err := nodes[0].Ctl(ctx, "cluster_status")
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range nodes {
		if !strings.Contains(out, node.Name) {
			t.Fatalf("rabbittest: %s not in the cluster: %s", node.Name, out)
		}
	}
	return nodes
}

// ClusterURL is an AMQP URL listing every node of the cluster.
func ClusterURL(nodes []*Node) string {
	hosts := make([]string, len(nodes))
	for i, n := range nodes {
		hosts[i] = n.Addr()
	}
	return fmt.Sprintf("amqp://guest:guest@%s/", strings.Join(hosts, ","))
}
