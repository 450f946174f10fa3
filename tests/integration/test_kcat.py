"""A third-party client (kcat, librdkafka's CLI) sees our broker and round-trips a message."""

import shutil
import subprocess
import uuid

from loanstream.config import KafkaSettings
from loanstream.topics import APPLICATIONS, create_topics


def kcat(*args: str, stdin: str | None = None) -> str:
    binary = shutil.which("kcat")
    assert binary, "kcat is not installed: `make tools` (apt-get install kcat) installs it"
    result = subprocess.run(
        [binary, *args], input=stdin, capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout


def test_kcat_lists_our_topics_and_round_trips_a_message(kafka: KafkaSettings) -> None:
    create_topics(kafka)
    topic = kafka.topic(APPLICATIONS)
    listing = kcat("-b", kafka.bootstrap_servers, "-L")
    assert f'topic "{topic}" with 3 partitions' in listing
    key, value = "app-42", f'{{"hello": "{uuid.uuid4().hex}"}}'
    kcat("-b", kafka.bootstrap_servers, "-P", "-t", topic, "-K", "|", stdin=f"{key}|{value}\n")
    out = kcat(
        "-b",
        kafka.bootstrap_servers,
        "-C",
        "-t",
        topic,
        "-c",
        "1",
        "-e",
        "-o",
        "beginning",
        "-f",
        "%k|%s\n",
        "-q",
    )
    assert out.strip() == f"{key}|{value}"
