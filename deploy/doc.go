// Package deploy holds PairDB's deployment files (Dockerfile, Kubernetes
// manifests, NATS server configuration and Helm values, a PostgreSQL
// reference, the Grafana dashboard) and, in deploy_test.go, the test that
// parses every one of them and checks their ports, probes, names and metric
// names agree with one another and with the code. It has no Go API.
package deploy
