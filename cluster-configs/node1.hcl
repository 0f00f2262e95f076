# Vigil local development cluster: node1 of 3 (see scripts/cluster.sh).
#
# node1: API 127.0.0.1:8200, cluster 127.0.0.1:8201
# node2: API 127.0.0.1:8210, cluster 127.0.0.1:8211
# node3: API 127.0.0.1:8220, cluster 127.0.0.1:8221
#
# Paths are relative to the repository root (the working directory of the node).
# Every node carries the same retry_join block pointing at node1: node1 ignores it
# (it is its own address); node2 and node3 keep retrying to join node1 with the
# root token from .cluster/root-token once scripts/cluster.sh has written it.
# scripts/cluster.sh does not run this file directly: at every start it copies it to
# .cluster/node1.hcl, shifting every 127.0.0.1:<port> by VIGIL_PORT_BASE - 8200
# (an exact copy with the default base), so keep the addresses literal.

storage "raft" {
  path    = ".cluster/node1"
  node_id = "node1"
  retry_join {
    leader_api_addr   = "http://127.0.0.1:8200"
    leader_token_file = ".cluster/root-token"
  }
}

listener "tcp" {
  address         = "127.0.0.1:8200"
  cluster_address = "127.0.0.1:8201"
  tls_disable     = true
}

api_addr     = "http://127.0.0.1:8200"
cluster_addr = "http://127.0.0.1:8201"
disable_performance_standby = false
