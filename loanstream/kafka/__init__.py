"""Kafka plumbing: the local broker (from Maven Central jars) and thin confluent-kafka helpers."""
