package server

import "net/http"

// podStreams serves the pod subresources that are streams, by name: exec, attach, portforward, log.
// Each handler gets the parsed request (account, pod name); it answers for that account's pod only.
var podStreams = map[string]func(k *kubeAPI, w http.ResponseWriter, r *http.Request, req *readRequest){}
