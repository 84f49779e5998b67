package printers

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestJSONPath(t *testing.T) {
	pod := func(name, ip string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.PodStatus{PodIP: ip}}
	}
	list := map[string]any{"kind": "List", "items": []any{pod("a", "10.244.0.5"), pod("b", "")}}
	for _, tc := range []struct {
		tmpl string
		v    any
		want string
	}{
		{`{.status.podIP}`, pod("a", "10.244.0.5"), "10.244.0.5"},
		{`{.items[*].metadata.name}`, list, "a b"},
		{`{range .items[*]}{.metadata.name}={.status.podIP}{"\n"}{end}`, list, "a=10.244.0.5\nb=\n"},
		{`{.items[?(@.metadata.name=="b")].metadata.name}`, list, "b"},
		{`ip: {.status.hostIP}.`, pod("a", ""), "ip: ."},
	} {
		var b strings.Builder
		if err := JSONPath(&b, tc.tmpl, tc.v); err != nil {
			t.Errorf("%s: %v", tc.tmpl, err)
			continue
		}
		if b.String() != tc.want {
			t.Errorf("%s = %q, want %q", tc.tmpl, b.String(), tc.want)
		}
	}
	if err := JSONPath(&strings.Builder{}, `{.items[}`, list); err == nil || !strings.Contains(err.Error(), "jsonpath") {
		t.Errorf("an unclosed bracket: err = %v, want a jsonpath error", err)
	}
}

func TestJSONPathValues(t *testing.T) {
	svc := &corev1.Service{Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{
		Ingress: []corev1.LoadBalancerIngress{{IP: "198.18.0.1"}, {IP: "198.18.0.2"}}}}}
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`{.status.loadBalancer.ingress[0].ip}`, []string{"198.18.0.1"}},
		{`{.status.loadBalancer.ingress[*].ip}`, []string{"198.18.0.1", "198.18.0.2"}},
		{`{.status.loadBalancer.ingress[5].ip}`, nil},
		{`{.spec.clusterIP}`, nil}, // empty strings are omitted from JSON, so there is nothing to find
	} {
		got, err := JSONPathValues(tc.expr, svc)
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		if strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
			t.Errorf("%s = %q, want %q", tc.expr, got, tc.want)
		}
	}
}
