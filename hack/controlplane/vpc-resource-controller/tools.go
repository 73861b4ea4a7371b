//go:build tools

// Package tools pins github.com/aws/amazon-vpc-resource-controller-k8s so its CRD YAML can be
// read from the module cache.
package tools

import _ "github.com/aws/amazon-vpc-resource-controller-k8s/apis/vpcresources/v1beta1"
