package main

import (
	"strings"
	"testing"

	"github.com/pilab/pi/lab/api"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestWaitFor checks what `pi wait --for` accepts and when each kind of condition is met, as kubectl has them.
func TestWaitFor(t *testing.T) {
	lb := func(ips ...string) *corev1.Service {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"}}
		for _, ip := range ips {
			svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
		}
		return svc
	}
	pod := func(ready corev1.ConditionStatus) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}}}
	}
	for _, tc := range []struct {
		flag string
		obj  metav1.Object
		want bool
	}{
		{"condition=Ready", pod(corev1.ConditionTrue), true},
		{"condition=ready", pod(corev1.ConditionFalse), false},
		{"condition=Ready=false", pod(corev1.ConditionFalse), true},
		{"condition=Initialized", pod(corev1.ConditionTrue), false},
		{"condition=Ready", &api.Account{Status: api.AccountStatus{Ready: true}}, true},
		{"jsonpath={.status.loadBalancer.ingress[0].ip}=198.18.0.1", lb("198.18.0.1"), true},
		{"jsonpath={.status.loadBalancer.ingress[0].ip}=198.18.0.1", lb("198.18.0.2"), false},
		{"jsonpath={.status.loadBalancer.ingress[0].ip}=198.18.0.1", lb(), false},
		{"jsonpath={.status.loadBalancer.ingress}", lb(), false},
		{"jsonpath={.status.loadBalancer.ingress}", lb("198.18.0.1"), true},
		{"jsonpath=.metadata.name=web", lb(), true},
	} {
		w, err := parseWaitFor(tc.flag)
		if err != nil {
			t.Errorf("--for=%s: %v", tc.flag, err)
			continue
		}
		if got, err := w.met(tc.obj); err != nil || got != tc.want {
			t.Errorf("--for=%s on %T: met = %v, %v; want %v", tc.flag, tc.obj, got, err, tc.want)
		}
	}
	w, _ := parseWaitFor("jsonpath={.status.loadBalancer.ingress[*].ip}=198.18.0.1")
	if _, err := w.met(lb("198.18.0.1", "198.18.0.2")); err == nil || !strings.Contains(err.Error(), "finds 2 values") {
		t.Errorf("a value against two results: err = %v, want one naming the 2 values", err)
	}
	for _, bad := range []string{"", "ready", "condition=", "jsonpath={.status", "jsonpath={.status}x", "jsonpath={.items[}=1"} {
		if _, err := parseWaitFor(bad); err == nil {
			t.Errorf("--for=%q: no error", bad)
		}
	}
}
