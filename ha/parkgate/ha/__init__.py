"""High availability: Patroni + etcd cluster description, supervision and drills."""
