//go:build tools

// Package tools pins the etcd command built by paved dev.
package tools

import _ "go.etcd.io/etcd/server/v3"
