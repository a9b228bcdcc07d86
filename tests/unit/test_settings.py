import pytest
from pydantic import SecretStr

from shopvec.settings import Settings


def test_defaults_use_the_embedded_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("SHOPVEC_"):
            monkeypatch.delenv(key)
    s = Settings()
    assert s.kafka_embedded and s.milvus_embedded
    assert s.kafka_bootstrap() == f"127.0.0.1:{s.stack.kafka_port}"
    assert s.milvus_uri() == f"http://127.0.0.1:{s.stack.milvus_port}"


def test_environment_overrides_nested_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPVEC_KAFKA__BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("SHOPVEC_MILVUS__URI", "http://milvus:19530")
    monkeypatch.setenv("SHOPVEC_MILVUS__TOKEN", "root:Milvus")
    monkeypatch.setenv("SHOPVEC_ENCODER__FUSION", "concat")
    monkeypatch.setenv("SHOPVEC_TOPICS__PARTITIONS", '{"products": 12}')
    s = Settings()
    assert not s.kafka_embedded and s.kafka_bootstrap() == "kafka:9092"
    assert s.milvus_uri() == "http://milvus:19530"
    assert isinstance(s.milvus.token, SecretStr)
    assert s.encoder.fusion == "concat"
    assert s.topics.partitions == {"products": 12}


def test_secrets_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPVEC_KAFKA__SASL_PASSWORD", "hunter2")
    dumped = str(Settings().redacted())
    assert "hunter2" not in dumped


def test_environment_rebuilds_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a started worker reads: settings changed in code, secrets included, survive."""
    for key in list(__import__("os").environ):
        if key.startswith("SHOPVEC_"):
            monkeypatch.delenv(key)
    base = Settings()
    s = base.model_copy(
        update={
            "kafka": base.kafka.model_copy(
                update={"sasl_password": SecretStr("hunter2"), "extra": {"linger.ms": "1"}}
            ),
            "milvus": base.milvus.model_copy(update={"collection": "q100000_ab12"}),
            "topics": base.topics.model_copy(
                update={"search_requests": "bench-requests", "partitions": {"products": 2}}
            ),
            "log_level": "DEBUG",
        }
    )
    env = s.environment()
    assert all(k.startswith("SHOPVEC_") for k in env)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    again = Settings()
    assert again == s
    assert again.kafka.sasl_password is not None
    assert again.kafka.sasl_password.get_secret_value() == "hunter2"


def test_fetch_wait_is_short_only_on_the_embedded_broker() -> None:
    embedded = Settings()
    assert (
        embedded.model_copy(
            update={"kafka": embedded.kafka.model_copy(update={"fetch_wait_max_ms": None})}
        ).fetch_wait_ms()
        == 2
    )
    kafka = embedded.kafka.model_copy(
        update={"bootstrap_servers": "kafka:9092", "fetch_wait_max_ms": None}
    )
    assert embedded.model_copy(update={"kafka": kafka}).fetch_wait_ms() == 10
    chosen = kafka.model_copy(update={"fetch_wait_max_ms": 50})
    assert embedded.model_copy(update={"kafka": chosen}).fetch_wait_ms() == 50


@pytest.mark.parametrize("field", ["reply_topic_records", "request_topic_records"])
def test_request_and_reply_topics_are_replaced_by_default_only_on_the_embedded_broker(
    field: str,
) -> None:
    embedded = Settings()

    def limit(**update: object) -> int:
        s = embedded.model_copy(update={"kafka": embedded.kafka.model_copy(update=update)})
        return int(getattr(s, field)())

    assert limit(**{field: None}) == 5_000
    assert limit(bootstrap_servers="kafka:9092") == 0
    assert limit(bootstrap_servers="kafka:9092", **{field: 100}) == 100
    assert limit(**{field: 0}) == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SHOPVEC_BEHAVIOUR__WEIGHT_TASTE", "inf"),
        ("SHOPVEC_QUERY__MAX_REQUEST_AGE_S", "Infinity"),
        ("SHOPVEC_HTTP__TIMEOUT_S", "nan"),
    ],
)
def test_no_setting_is_infinite_or_not_a_number(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    # An infinite weight passes its lower bound and turns every personalised score into NaN.
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=r"finite|greater"):
        Settings()
