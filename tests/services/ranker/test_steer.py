"""Free-text steering (`/recommend?q=`): the rank blend, the tag matches, the exported query encoder, and the
422 answers when a query cannot be served. The demo-world check (q raises the share of its tags) is in
tests/services/test_room_stack.py."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from encore.settings import RankerSettings
from encore.store import Store
from encore.text_query import QueryEncoder
from services.ranker.main import create_app
from services.ranker.steer import Steer, rank_scores, tag_matches
from tests.services.ranker.conftest import CONTENT_ONLY, FakeRetriever, TrainedBundle, candidate_rows
from tests.services.ranker.test_api import settings_for
from tests.training.test_export_clap_text import export_tiny_clap_text

ENCODER_DIR = RankerSettings().query_encoder_path
needs_encoder = pytest.mark.skipif(
    not (ENCODER_DIR / "model.onnx").is_file(),
    reason=f"no query encoder at {ENCODER_DIR}: python -m training.export_text_encoder (make install does)",
)
CANDIDATES = [f"t{i}" for i in range(0, 60, 3)] + [CONTENT_ONLY]  # only CONTENT_ONLY has tags (classical, strings)


def test_rank_scores_put_the_largest_first_and_nan_last() -> None:
    assert rank_scores(np.array([0.2, 0.9, np.nan, 0.5])).tolist() == pytest.approx([1 / 3, 1.0, 0.0, 2 / 3])
    assert rank_scores(np.array([0.4])).tolist() == [1.0]


def test_a_tracks_match_is_the_mean_over_its_distinct_known_tags() -> None:
    similarity = {"classical": 0.6, "strings": 0.8, "rock": 0.1}
    tags = ["mtt:strings,mtt:classical,msd:classical,mtt:harp", "msd:rock", "", None]
    matches = tag_matches(similarity, tags)
    assert matches[:2].tolist() == pytest.approx([0.7, 0.1])
    assert np.isnan(matches[2:]).all()


def test_the_blend_follows_the_weight_and_keeps_scores_apart() -> None:
    similarity = {"classical": 0.9, "rock": 0.1}
    tags, scores = ["mtt:rock", "mtt:classical"], np.array([0.8, 0.3])
    assert np.argmax(Steer(ENCODER_DIR, 0.0)(similarity, tags, scores).order_by) == 0  # w = 0: click probability
    assert np.argmax(Steer(ENCODER_DIR, 1.0)(similarity, tags, scores).order_by) == 1  # w = 1: the query


@needs_encoder
def test_the_query_encoder_puts_the_named_tags_first() -> None:
    top = sorted(QueryEncoder(ENCODER_DIR).tag_similarities("classical strings").items(), key=lambda kv: -kv[1])
    assert {name for name, _ in top[:2]} == {"classical", "strings"}
    guitar = QueryEncoder(ENCODER_DIR).tag_similarities("mellow acoustic guitar")
    assert guitar["guitar"] > guitar["techno"] and guitar["acoustic"] > guitar["metal"]


@pytest.fixture
def client_for(trained_bundle: TrainedBundle, store: Store, retriever: FakeRetriever) -> Iterator[callable]:
    retriever.candidates = candidate_rows(CANDIDATES, cold={CONTENT_ONLY})
    clients: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        settings = settings_for(trained_bundle.artifacts_dir, retriever.url, **overrides)
        clients.append(TestClient(create_app(settings, store)).__enter__())
        return clients[-1]

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@needs_encoder
def test_a_query_lifts_the_track_whose_tags_it_names(client_for) -> None:
    client = client_for(ranker_query_weight=1.0)
    plain = client.get("/recommend", params={"user_id": "u1", "k": 5}).json()
    steered = client.get("/recommend", params={"user_id": "u1", "k": 5, "q": "classical strings"}).json()
    assert steered["query"] == "classical strings" and plain["query"] is None
    assert steered["items"][0]["track_id"] == CONTENT_ONLY
    assert steered["items"][0]["query_match"] > 0.4
    assert all(item["query_match"] is None for item in plain["items"])
    ready = client.get("/readyz").json()
    assert ready["query_encoder"] is True and ready["query_encoder_name"] in ("minilm-l6-v2", "clap")


def test_a_clap_text_export_steers_and_readyz_names_it(client_for, tmp_path) -> None:
    client = client_for(ranker_query_weight=1.0, ranker_query_encoder_dir=str(export_tiny_clap_text(tmp_path)))
    ready = client.get("/readyz").json()
    assert ready["query_encoder"] is True and ready["query_encoder_name"] == "clap"
    steered = client.get("/recommend", params={"user_id": "u1", "k": 5, "q": "classical strings"}).json()
    assert steered["query"] == "classical strings"
    assert steered["items"][0]["track_id"] == CONTENT_ONLY  # the one tagged track: the rest match least
    assert steered["items"][0]["query_match"] is not None


def test_without_the_encoder_a_query_is_refused_and_plain_answers_are_served(client_for, tmp_path) -> None:
    client = client_for(ranker_query_encoder_dir=str(tmp_path / "absent"))
    refused = client.get("/recommend", params={"user_id": "u1", "q": "mellow acoustic guitar"})
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert detail["code"] == "query_unavailable"
    assert "training.export_text_encoder" in detail["message"]
    assert client.get("/recommend", params={"user_id": "u1"}).status_code == 200
    ready = client.get("/readyz").json()
    assert ready["query_encoder"] is False and ready["query_encoder_name"] is None


@pytest.mark.parametrize("q", ["", "   ", "x" * 201])
def test_a_blank_or_overlong_query_is_an_invalid_request(client_for, q: str) -> None:
    answer = client_for().get("/recommend", params={"user_id": "u1", "q": q})
    assert answer.status_code == 422
    assert answer.json()["detail"]["code"] == "invalid_request"
