//go:build tools

// Package tools pins sigs.k8s.io/gateway-api so its CRD YAML can be read from the module cache.
package tools

import _ "sigs.k8s.io/gateway-api/apis/v1"
