package controller

import (
	"context"
	"regexp"
	"strings"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/net/netns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CollectGarbage removes what belongs to no stored pod: containers and sandboxes of pods deleted while the
// daemon was down, shims whose container containerd no longer has, and pod network namespaces nobody owns.
func (m *Manager) CollectGarbage(ctx context.Context) error {
	objs, err := m.Store.List(kindPod, "")
	if err != nil {
		return err
	}
	live := map[string]bool{}
	liveNetns := map[string]bool{}
	for _, o := range objs {
		p := o.(*corev1.Pod)
		live[string(p.UID)] = true
		liveNetns[PodNetnsName(m.Lab, p.UID)] = true
		// A pod started before the upgrade to UID names still runs in its old netns: keep it.
		liveNetns[oldPodNetnsName(m.Lab, api.AccountOf(p), p.Name)] = true
	}
	listed, err := m.Runtime.List(ctx)
	if err != nil {
		return err
	}
	gone := map[string]bool{}
	for _, c := range listed {
		if !live[c.PodUID] && !gone[c.PodUID] {
			gone[c.PodUID] = true
			m.Log.Info("removing leftover containers", "pod", c.Pod, "uid", c.PodUID)
			if err := m.Runtime.RemovePod(ctx, c.PodUID); err != nil {
				m.Log.Warn("remove leftover pod", "uid", c.PodUID, "err", err)
			}
			m.Runtime.RemoveSandbox(c.PodUID)
		}
	}
	orphans, err := m.Runtime.RemoveOrphanShims(ctx)
	for _, o := range orphans {
		m.Log.Info("removed a shim containerd no longer knows", "shim", o)
	}
	if err != nil {
		m.Log.Warn("remove orphan shims", "err", err)
	}
	accounts, err := m.Store.List(kindAccount, "")
	if err != nil {
		return err
	}
	names, err := netns.ListNamed(m.Lab + "-")
	if err != nil {
		return err
	}
	for _, n := range names {
		if liveNetns[n] || !m.isPodNetns(n, accounts) {
			continue
		}
		m.Log.Info("removing leftover pod netns", "netns", n)
		if err := netns.DeleteNamed(n); err != nil {
			m.Log.Warn("remove leftover pod netns", "netns", n, "err", err)
		}
	}
	return nil
}

// uidRE matches the UIDs the store gives (RFC 4122 text form).
var uidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// isPodNetns reports whether a named netns of the lab is a pod's: "<lab>-p-<uid>" (PodNetnsName), or the
// "<lab>-<account>-<pod>" of an existing account that older versions used. Routers ("<lab>-r<index>") and
// a --host-netns that happens to start with the lab prefix match neither.
func (m *Manager) isPodNetns(name string, accounts []metav1.Object) bool {
	if uid, ok := strings.CutPrefix(name, m.Lab+"-p-"); ok && uidRE.MatchString(uid) {
		return true
	}
	for _, a := range accounts {
		if strings.HasPrefix(name, m.Lab+"-"+a.GetName()+"-") {
			return true
		}
	}
	return false
}

// AccountObjects counts what an account still holds, by kind.
func (m *Manager) AccountObjects(account string) map[string]int { return m.accountObjects(account) }

// MeterFIP opens (held) or closes the usage record of a Floating IP.
func (m *Manager) MeterFIP(f *api.FloatingIP, held bool) {
	m.meter(usageRecord{Account: api.AccountOf(f), Kind: "fip", Name: f.Name, UID: string(f.UID)}, held)
}

// Close releases what the controllers hold (DNS servers, nft handles); the kernel state stays.
func (m *Manager) Close() { m.closeMore() }
