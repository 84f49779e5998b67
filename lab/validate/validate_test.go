package validate

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pilab/pi/lab/api"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// decodeYAML reads one document of any manifest kind, strictly, as pi create does.
func decodeYAML(t testing.TB, doc string) metav1.Object {
	t.Helper()
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
		t.Fatalf("type of %q: %v", doc, err)
	}
	k, ok := api.LookupKind(tm.Kind)
	if !ok {
		t.Fatalf("kind %q unknown", tm.Kind)
	}
	o := k.New()
	if err := yaml.UnmarshalStrict([]byte(doc), o); err != nil {
		t.Fatalf("decode %q: %v", doc, err)
	}
	return o
}

// A pod with one container; the case's YAML lines go under spec (podSpec) or the container (ctr).
const podTmpl = `apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  containers:
  - name: web
    image: nginx
PORTS
CTR
SPEC
`

func indent(s string, n int) string {
	if s == "" {
		return ""
	}
	pad := strings.Repeat(" ", n)
	lines := strings.Split(strings.Trim(s, "\n"), "\n")
	for i := range lines {
		lines[i] = pad + lines[i]
	}
	return strings.Join(lines, "\n")
}

func podYAML(spec, ctr string) string {
	ports := "ports:\n- name: http\n  containerPort: 80"
	if strings.HasPrefix(ctr, "ports:") {
		ports = ""
	}
	return strings.NewReplacer("PORTS", indent(ports, 4), "CTR", indent(ctr, 4), "SPEC", indent(spec, 2)).Replace(podTmpl)
}

// deploymentOf wraps a pod's spec in a Deployment, so every pod rule is also checked in a template.
func deploymentOf(p *corev1.Pod) *appsv1.Deployment {
	one := int32(1)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: p.Labels}, Spec: p.Spec},
		},
	}
}

func replicaSetOf(p *corev1.Pod) *appsv1.ReplicaSet {
	d := deploymentOf(p)
	return &appsv1.ReplicaSet{ObjectMeta: d.ObjectMeta, Spec: appsv1.ReplicaSetSpec{Replicas: d.Spec.Replicas, Selector: d.Spec.Selector, Template: d.Spec.Template}}
}

type podCase struct {
	name, spec, ctr string
	// field is the path the error must name (under spec.); msg a part of its message. Both empty: accepted.
	field, msg string
}

var podCases = []podCase{
	{name: "plain"},
	{name: "privileged", ctr: "securityContext:\n  privileged: true", field: "containers[0].securityContext.privileged", msg: notInPi},
	{name: "privileged false is what Pi does", ctr: "securityContext:\n  privileged: false"},
	{name: "runAsUser", ctr: "securityContext:\n  runAsUser: 1000", field: "containers[0].securityContext.runAsUser", msg: notInPi},
	{name: "hostNetwork", spec: "hostNetwork: true", field: "hostNetwork", msg: notInPi + ": every pod gets its own network namespace"},
	{name: "hostPID", spec: "hostPID: true", field: "hostPID", msg: notInPi},
	{name: "hostIPC", spec: "hostIPC: true", field: "hostIPC", msg: notInPi},
	{name: "hostPath volume", spec: "volumes:\n- name: root\n  hostPath:\n    path: /", field: "volumes[0].hostPath", msg: notInPi},
	{name: "emptyDir volume", spec: "volumes:\n- name: scratch\n  emptyDir: {}", field: "volumes[0]", msg: notInPi},
	{name: "volumeMounts", ctr: "volumeMounts:\n- name: x\n  mountPath: /x", field: "containers[0].volumeMounts", msg: notInPi},
	{name: "hostPort", ctr: "ports:\n- containerPort: 81\n  hostPort: 81", field: "containers[0].ports[0].hostPort", msg: notInPi},
	{name: "initContainers", spec: "initContainers:\n- name: init\n  image: busybox", field: "initContainers", msg: notInPi},
	{name: "affinity", spec: "affinity:\n  nodeAffinity: {}", field: "affinity", msg: notInPi},
	{name: "nodeSelector is how pods pick nodes", spec: "nodeSelector:\n  kubernetes.io/hostname: worker2"},
	{name: "nodeName places a pod itself", spec: "nodeName: worker2"},
	{name: "dnsPolicy Default", spec: "dnsPolicy: Default", field: "dnsPolicy", msg: notInPi},
	{name: "dnsPolicy bogus", spec: "dnsPolicy: Bogus", field: "dnsPolicy", msg: "Unsupported value"},
	{name: "dnsPolicy ClusterFirst", spec: "dnsPolicy: ClusterFirst"},
	{name: "empty securityContext", spec: "securityContext: {}"},
	{name: "startupProbe", ctr: "startupProbe:\n  tcpSocket:\n    port: 80", field: "containers[0].startupProbe", msg: notInPi},
	{name: "lifecycle", ctr: "lifecycle:\n  preStop:\n    exec:\n      command: [sleep, '1']", field: "containers[0].lifecycle", msg: notInPi},

	{name: "envFrom", ctr: "envFrom:\n- configMapRef:\n    name: cfg", field: "containers[0].envFrom", msg: notInPi},
	{name: "secretKeyRef", ctr: "env:\n- name: PW\n  valueFrom:\n    secretKeyRef:\n      name: s\n      key: pw", field: "containers[0].env[0].valueFrom.secretKeyRef", msg: notInPi},
	{name: "configMapKeyRef", ctr: "env:\n- name: C\n  valueFrom:\n    configMapKeyRef:\n      name: c\n      key: k", field: "containers[0].env[0].valueFrom.configMapKeyRef", msg: notInPi},
	{name: "resourceFieldRef", ctr: "env:\n- name: C\n  valueFrom:\n    resourceFieldRef:\n      resource: limits.cpu", field: "containers[0].env[0].valueFrom.resourceFieldRef", msg: notInPi},
	{name: "bad fieldRef", ctr: "env:\n- name: X\n  valueFrom:\n    fieldRef:\n      fieldPath: spec.nothing", field: "containers[0].env[0].valueFrom.fieldRef.fieldPath", msg: "Unsupported value"},
	{name: "fieldRef status.hostIPs", ctr: "env:\n- name: X\n  valueFrom:\n    fieldRef:\n      fieldPath: status.hostIPs", field: "containers[0].env[0].valueFrom.fieldRef.fieldPath", msg: notInPi},
	{name: "fieldRef subscript on name", ctr: "env:\n- name: X\n  valueFrom:\n    fieldRef:\n      fieldPath: metadata.name['x']", field: "containers[0].env[0].valueFrom.fieldRef", msg: "does not support subscript"},
	{name: "fieldRef bad label key", ctr: "env:\n- name: X\n  valueFrom:\n    fieldRef:\n      fieldPath: metadata.labels['a b']", field: "containers[0].env[0].valueFrom.fieldRef", msg: "name part must consist of"},
	{name: "fieldRef apiVersion v2", ctr: "env:\n- name: X\n  valueFrom:\n    fieldRef:\n      apiVersion: v2\n      fieldPath: metadata.name", field: "containers[0].env[0].valueFrom.fieldRef.apiVersion", msg: "Unsupported value"},
	{name: "fieldRef every supported path", ctr: `env:
- {name: A, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
- {name: B, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
- {name: C, valueFrom: {fieldRef: {fieldPath: metadata.uid}}}
- {name: D, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
- {name: E, valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}}
- {name: F, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
- {name: G, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}
- {name: H, valueFrom: {fieldRef: {fieldPath: status.podIPs}}}
- {name: I, valueFrom: {fieldRef: {apiVersion: v1, fieldPath: "metadata.labels['app']"}}}
- {name: J, valueFrom: {fieldRef: {fieldPath: "metadata.annotations['example.com/x']"}}}`},
	{name: "value and valueFrom", ctr: "env:\n- name: X\n  value: a\n  valueFrom:\n    fieldRef:\n      fieldPath: metadata.name", field: "containers[0].env[0].valueFrom", msg: "may not be specified when `value` is not empty"},
	{name: "env name A=B", ctr: "env:\n- name: A=B\n  value: x", field: "containers[0].env[0].name", msg: "valid environment variable name"},
	{name: "env name empty", ctr: "env:\n- value: x", field: "containers[0].env[0].name", msg: "Required value"},
	{name: "env name with dots is valid", ctr: "env:\n- name: my.var_1\n  value: x"},

	{name: "cpu -1", ctr: "resources:\n  limits:\n    cpu: '-1'", field: "containers[0].resources.limits[cpu]", msg: "must be greater than or equal to 0"},
	{name: "cpu request -1", ctr: "resources:\n  requests:\n    cpu: '-1'", field: "containers[0].resources.requests[cpu]", msg: "must be greater than or equal to 0"},
	{name: "request above limit", ctr: "resources:\n  requests:\n    cpu: '2'\n  limits:\n    cpu: '1'", field: "containers[0].resources.requests[cpu]", msg: "must be less than or equal to cpu limit of 1"},
	{name: "gpu", ctr: "resources:\n  limits:\n    nvidia.com/gpu: '1'", field: "containers[0].resources.limits[nvidia.com/gpu]", msg: notInPi},
	{name: "memory too small", ctr: "resources:\n  limits:\n    memory: 1Mi", field: "containers[0].resources.limits.memory", msg: "must be at least 4Mi"},
	{name: "normal resources", ctr: "resources:\n  requests:\n    cpu: 100m\n    memory: 32Mi\n  limits:\n    cpu: 500m\n    memory: 64Mi"},

	{name: "probe port 0", ctr: "readinessProbe:\n  tcpSocket:\n    port: 0", field: "containers[0].readinessProbe.tcpSocket.port", msg: "must be between 1 and 65535"},
	{name: "probe httpGet port 70000", ctr: "livenessProbe:\n  httpGet:\n    port: 70000", field: "containers[0].livenessProbe.httpGet.port", msg: "must be between 1 and 65535"},
	{name: "probe port name unknown", ctr: "readinessProbe:\n  httpGet:\n    port: metrics", field: "containers[0].readinessProbe.httpGet.port", msg: "not the name of a port of container"},
	{name: "probe named port", ctr: "readinessProbe:\n  httpGet:\n    path: /\n    port: http"},
	{name: "probe negative period", ctr: "readinessProbe:\n  periodSeconds: -1\n  tcpSocket:\n    port: 80", field: "containers[0].readinessProbe.periodSeconds", msg: "must be greater than or equal to 0"},
	{name: "liveness successThreshold 2", ctr: "livenessProbe:\n  successThreshold: 2\n  tcpSocket:\n    port: 80", field: "containers[0].livenessProbe.successThreshold", msg: "must be 1"},
	{name: "probe scheme", ctr: "readinessProbe:\n  httpGet:\n    port: 80\n    scheme: FTP", field: "containers[0].readinessProbe.httpGet.scheme", msg: "Unsupported value"},
	{name: "probe exec without command", ctr: "readinessProbe:\n  exec: {}", field: "containers[0].readinessProbe.exec.command", msg: "Required value"},

	{name: "terminationGracePeriodSeconds -5", spec: "terminationGracePeriodSeconds: -5", field: "terminationGracePeriodSeconds", msg: "must be greater than or equal to 0"},
	{name: "terminationGracePeriodSeconds 0", spec: "terminationGracePeriodSeconds: 0"},
	{name: "hostname", spec: "hostname: Not_A_Label", field: "hostname", msg: "RFC 1123"},
	{name: "imagePullPolicy bogus", ctr: "imagePullPolicy: Sometimes", field: "containers[0].imagePullPolicy", msg: "Unsupported value"},
	{name: "defaulted fields as the server returns them", spec: "dnsPolicy: ClusterFirst\nrestartPolicy: Always\nterminationGracePeriodSeconds: 5\nenableServiceLinks: false\nschedulerName: default-scheduler",
		ctr: "imagePullPolicy: IfNotPresent\nterminationMessagePath: /dev/termination-log\nterminationMessagePolicy: File"},
}

// errorNames asserts that errs holds an error on path whose message holds msg, or that errs is empty when
// path is "".
func errorNames(t *testing.T, errs field.ErrorList, path, msg string) {
	t.Helper()
	if path == "" {
		if len(errs) > 0 {
			t.Errorf("refused, want accepted: %v", errs.ToAggregate())
		}
		return
	}
	if len(errs) == 0 {
		t.Errorf("accepted, want an error on %s (%s)", path, msg)
		return
	}
	for _, e := range errs {
		if e.Field == path && strings.HasPrefix(e.Error(), path+": ") && strings.Contains(e.Error(), msg) {
			return
		}
	}
	t.Errorf("error %q does not name %s with %q", errs.ToAggregate(), path, msg)
}

func TestPodSpecs(t *testing.T) {
	for _, c := range podCases {
		t.Run(c.name, func(t *testing.T) {
			pod := decodeYAML(t, podYAML(c.spec, c.ctr)).(*corev1.Pod)
			field := ""
			if c.field != "" {
				field = "spec." + c.field
			}
			errorNames(t, Errors(pod), field, c.msg)
			// The same rules with the template's prefix in a Deployment and a ReplicaSet, unless the case is
			// about the restart policy only pods may choose.
			if field != "" {
				field = "spec.template." + field
			}
			errorNames(t, Errors(deploymentOf(pod)), field, c.msg)
			errorNames(t, Errors(replicaSetOf(pod)), field, c.msg)
		})
	}
}

func TestObjects(t *testing.T) {
	cases := []struct {
		name, doc  string
		field, msg string
	}{
		{"service externalIPs", `apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  externalIPs: [1.2.3.4]
  ports: [{port: 80}]`, "spec.externalIPs", notInPi},
		{"service port 0", `apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{port: 0}]`, "spec.ports[0].port", "must be between 1 and 65535"},
		{"service port 65536", `apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{port: 65536}]`, "spec.ports[0].port", "must be between 1 and 65535"},
		{"service targetPort 70000", `apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{port: 80, targetPort: 70000}]`, "spec.ports[0].targetPort", "must be between 1 and 65535"},
		{"service targetPort bad name", `apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{port: 80, targetPort: "no_such_NAME"}]`, "spec.ports[0].targetPort", "Invalid value"},
		{"service nodePort", `apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{port: 80, nodePort: 30080}]`, "spec.ports[0].nodePort", notInPi},
		{"service port name", `apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: Web_1, port: 80}]`, "spec.ports[0].name", "RFC 1123"},
		{"service clusterIPs other than clusterIP", `apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.11]
  ports: [{port: 80}]`, "spec.clusterIPs", "spec.clusterIP"},
		{"service as the server returns it", `apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  internalTrafficPolicy: Cluster
  sessionAffinity: None
  type: ClusterIP
  selector: {app: web}
  ports: [{port: 80, protocol: TCP, targetPort: 80}]`, "", ""},
		{"service externalTrafficPolicy Local", `apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  loadBalancerIP: 192.0.2.10
  externalTrafficPolicy: Local
  ports: [{port: 80}]`, "spec.externalTrafficPolicy", notInPi},
		{"service sessionAffinityConfig other timeout", `apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
  ports: [{port: 80}]`, "spec.sessionAffinityConfig.clientIP.timeoutSeconds", notInPi},
		{"deployment restartPolicy Never", `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      restartPolicy: Never
      containers: [{name: web, image: nginx}]`, "spec.template.spec.restartPolicy", "Unsupported value"},
		{"deployment strategy both zero", `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  strategy: {rollingUpdate: {maxSurge: 0, maxUnavailable: 0}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]`, "spec.strategy.rollingUpdate.maxUnavailable", "may not be 0 when `maxSurge` is 0"},
		{"deployment strategy bad percent", `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  strategy: {rollingUpdate: {maxSurge: "x%"}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]`, "spec.strategy.rollingUpdate.maxSurge", "Invalid value"},
		{"deployment recreate with rollingUpdate", `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  strategy: {type: Recreate, rollingUpdate: {maxSurge: 1}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]`, "spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'"},
		{"deployment negative minReadySeconds", `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  minReadySeconds: -1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]`, "spec.minReadySeconds", "must be greater than or equal to 0"},
		{"deployment progressDeadline not above minReady", `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  minReadySeconds: 10
  progressDeadlineSeconds: 10
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]`, "spec.progressDeadlineSeconds", "must be greater than minReadySeconds"},
		{"replicaset negative replicas", `apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web}
spec:
  replicas: -1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]`, "spec.replicas", "must be greater than or equal to 0"},
		{"account negative quota", `apiVersion: pilab.dev/v1
kind: Account
metadata: {name: alice}
spec: {fipQuota: -1}`, "spec.fipQuota", "must be greater than or equal to 0"},
		{"account", `apiVersion: pilab.dev/v1
kind: Account
metadata: {name: alice}`, "", ""},
		{"account ceilings", `apiVersion: pilab.dev/v1
kind: Account
metadata: {name: alice}
spec: {cpuQuota: 500m, memoryQuota: 2Gi}`, "", ""},
		{"account cpu quota not a quantity", `apiVersion: pilab.dev/v1
kind: Account
metadata: {name: alice}
spec: {cpuQuota: two}`, "spec.cpuQuota", "must be a quantity"},
		{"account cpu quota below what CFS enforces", `apiVersion: pilab.dev/v1
kind: Account
metadata: {name: alice}
spec: {cpuQuota: 5m}`, "spec.cpuQuota", "at least 10m"},
		{"account negative cpu quota", `apiVersion: pilab.dev/v1
kind: Account
metadata: {name: alice}
spec: {cpuQuota: "-1"}`, "spec.cpuQuota", "at least 10m"},
		{"account memory quota too small", `apiVersion: pilab.dev/v1
kind: Account
metadata: {name: alice}
spec: {memoryQuota: 1Mi}`, "spec.memoryQuota", "at least 16Mi"},
		{"account memory quota not a quantity", `apiVersion: pilab.dev/v1
kind: Account
metadata: {name: alice}
spec: {memoryQuota: lots}`, "spec.memoryQuota", "must be a quantity"},
		{"fip not an address", `apiVersion: pilab.dev/v1
kind: FloatingIP
metadata: {name: web}`, "metadata.name", "must be the Floating IP's IPv4 address"},
		{"fip display name with a newline", `apiVersion: pilab.dev/v1
kind: FloatingIP
metadata: {name: 192.0.2.10}
spec: {displayName: "a\nb"}`, "spec.displayName", "printable"},
		{"fip", `apiVersion: pilab.dev/v1
kind: FloatingIP
metadata: {name: 192.0.2.10}
spec: {displayName: "front door"}`, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			errorNames(t, Errors(decodeYAML(t, c.doc)), c.field, c.msg)
		})
	}
}

// The manifests the lab ships and its README and scripts use must stay accepted.
func TestShippedManifests(t *testing.T) {
	root := "../.."
	files, _ := filepath.Glob(filepath.Join(root, "scenarios/manifests/*"))
	docs := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs[f] = b
	}
	// The script tests' manifests, except the ones written to be refused.
	refused := map[string]bool{"bad.yml": true, "ports.yml": true, "noimage.yml": true}
	scripts, _ := filepath.Glob(filepath.Join(root, "cmd/pi/testdata/script/*.txtar"))
	for _, s := range scripts {
		b, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		for name, data := range txtarFiles(b) {
			if (strings.HasSuffix(name, ".yml") || strings.HasSuffix(name, ".yaml")) && !refused[name] {
				docs[s+":"+name] = data
			}
		}
	}
	if len(docs) < 3 {
		t.Fatalf("found only %d manifests; the paths of this test are stale", len(docs))
	}
	for name, data := range docs {
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for i := 1; ; i++ {
			raw, err := r.Read()
			if err != nil {
				break
			}
			var tm metav1.TypeMeta
			if yaml.Unmarshal(raw, &tm) != nil || tm.Kind == "" {
				t.Logf("%s: document %d is not an object: %q", name, i, raw)
				continue
			}
			if err := Object(decodeYAML(t, string(raw))); err != nil {
				t.Errorf("%s: document %d refused: %v", name, i, err)
			}
		}
	}
}

// txtarFiles splits a txtar archive ("-- name --" lines) into its files.
func txtarFiles(b []byte) map[string][]byte {
	out := map[string][]byte{}
	var cur string
	for _, l := range strings.SplitAfter(string(b), "\n") {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "-- ") && strings.HasSuffix(t, " --") {
			cur = strings.TrimSuffix(strings.TrimPrefix(t, "-- "), " --")
			out[cur] = nil
			continue
		}
		if cur != "" {
			out[cur] = append(out[cur], l...)
		}
	}
	return out
}

// The wording a user reads, whole, for the case the issue shows.
func TestMessage(t *testing.T) {
	pod := decodeYAML(t, podYAML("hostNetwork: true", "")).(*corev1.Pod)
	want := "spec.hostNetwork: Forbidden: not supported in Pi: every pod gets its own network namespace on its account's network"
	if err := Object(pod); err == nil || err.Error() != want {
		t.Errorf("Object: %v, want %q", err, want)
	}
}
