#!/bin/sh
# gen.sh DIR: writes DIR/zz_generated.openapi.go, the OpenAPI definitions of every kind the lab's Kubernetes
# API serves, with openapi-gen (the go.mod tool, at the kube-openapi version k8s.io/apimachinery requires).
# Run from anywhere inside the module; `make openapi` runs it into lab/openapi and the package's test runs it
# into a temporary directory to check the committed file is current.
set -e
out=$(cd "${1:?usage: gen.sh OUTPUT_DIR}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.." # the module's root: openapi-gen loads the packages from there
exec go tool openapi-gen \
	--output-dir "$out" \
	--output-pkg github.com/pilab/pi/lab/openapi \
	--output-file zz_generated.openapi.go \
	--go-header-file "$here/boilerplate.go.txt" \
	--report-filename "$out/api_violations.list" \
	k8s.io/api/core/v1 \
	k8s.io/api/apps/v1 \
	k8s.io/api/autoscaling/v1 \
	k8s.io/api/discovery/v1 \
	k8s.io/api/policy/v1 \
	k8s.io/apimachinery/pkg/apis/meta/v1 \
	k8s.io/apimachinery/pkg/runtime \
	k8s.io/apimachinery/pkg/util/intstr \
	k8s.io/apimachinery/pkg/api/resource \
	k8s.io/apimachinery/pkg/version \
	github.com/pilab/pi/lab/api \
	github.com/pilab/pi/lab/openapi
