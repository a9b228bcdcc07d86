"""Kafka plumbing on confluent-kafka: configuration, topics, dead letters."""

from shopvec.kafka.admin import create_topic, delete_topics, ensure_topics
from shopvec.kafka.config import admin_config, common_config, consumer_config, producer_config
from shopvec.kafka.dead_letters import DeadLetterSink

__all__ = [
    "DeadLetterSink",
    "admin_config",
    "common_config",
    "consumer_config",
    "create_topic",
    "delete_topics",
    "ensure_topics",
    "producer_config",
]
