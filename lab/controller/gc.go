package controller

import (
	"context"
	"strings"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/net/netns"
	corev1 "k8s.io/api/core/v1"
)

// CollectGarbage removes what belongs to no stored pod: containers and sandboxes of pods deleted while the
// daemon was down, and pod network namespaces nobody owns.
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
		liveNetns[PodNetnsName(m.Lab, api.AccountOf(p), p.Name)] = true
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
	accounts, err := m.Store.List(kindAccount, "")
	if err != nil {
		return err
	}
	names, err := netns.ListNamed(m.Lab + "-")
	if err != nil {
		return err
	}
	for _, n := range names {
		for _, a := range accounts {
			prefix := m.Lab + "-" + a.GetName() + "-"
			if strings.HasPrefix(n, prefix) && !liveNetns[n] {
				m.Log.Info("removing leftover pod netns", "netns", n)
				netns.DeleteNamed(n)
			}
		}
	}
	return nil
}

// AccountObjects counts what an account still holds, by kind.
func (m *Manager) AccountObjects(account string) map[string]int { return m.accountObjects(account) }

// MeterFIP opens (held) or closes the usage record of a Floating IP.
func (m *Manager) MeterFIP(f *api.FloatingIP, held bool) {
	m.meter(usageRecord{Account: api.AccountOf(f), Kind: "fip", Name: f.Name, UID: string(f.UID)}, held)
}

// Close releases what the controllers hold (DNS servers, nft handles); the kernel state stays.
func (m *Manager) Close() { m.closeMore() }
