package controller

import (
	"context"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/net/network"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// routeMore queues what a stored change means for the workload and service controllers.
func (m *Manager) routeMore(ev api.WatchEvent, meta *metav1.ObjectMeta) {
	m.routeWorkloads(ev, meta)
	m.routeServices(ev, meta)
}

// resyncMore queues every object of the workload and service controllers.
func (m *Manager) resyncMore() {
	m.resyncWorkloads()
	m.resyncServices()
}

// startMore starts the workload and service controllers' workers.
func (m *Manager) startMore(ctx context.Context) {
	m.startWorkloads(ctx)
	m.startServices(ctx)
}

// accountReady runs once an account's network is up (DNS, Services).
func (m *Manager) accountReady(ctx context.Context, acct *api.Account, a *network.Account) {
	m.servicesAccountReady(ctx, acct, a)
}

// accountGone runs before an account's network is removed.
func (m *Manager) accountGone(acct *api.Account) { m.servicesAccountGone(acct) }

// objectDeleted runs after an object was removed from the store at once (not gracefully).
func (m *Manager) objectDeleted(account string, k api.Kind, o metav1.Object) {
	switch f := o.(type) {
	case *api.FloatingIP:
		m.MeterFIP(f, false)
	case *corev1.Service:
		m.meterService(f, false)
		m.Store.Delete(kindEndpoints, account, f.Name)
	}
}

// closeMore releases what the service controllers hold.
func (m *Manager) closeMore() { m.closeServices() }
