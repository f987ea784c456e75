"""Control requests: validation, and a ROUTER server that answers everything, garbage included."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamtrack.live import rle
from streamtrack.live.control import HARD_LIMIT_BYTES, MAX_REQUEST_BYTES, ControlServer, RequestError, parse_request


def req(**kw) -> bytes:
    return json.dumps({"v": 1, **kw}).encode()


def test_valid_requests_parse_into_prompts():
    r = parse_request(req(cmd="add", obj_id=3, box=[1, 2, 30, 40], points=[[5, 6, 0]], seq=17))
    assert (r.cmd, r.obj_id, r.seq) == ("add", 3, 17)
    assert r.prompt.box == (1, 2, 30, 40) and r.prompt.points == ((5, 6),) and r.prompt.labels == (0,)
    mask = np.zeros((20, 30), bool)
    mask[5:9, 10:20] = True
    r = parse_request(req(cmd="correct", obj_id=1, mask={"size": [20, 30], "counts": rle.encode(mask).decode()}))
    assert np.array_equal(r.prompt.mask, mask)
    assert parse_request(req(cmd="state")).cmd == "state"


@pytest.mark.parametrize(
    "raw,message",
    [
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (json.dumps({"cmd": "list"}).encode(), "unsupported protocol version"),
        (req(cmd="fly"), "unknown cmd"),
        (req(cmd="list", obj_id=1), "unknown field"),
        (req(cmd="add", obj_id="one", box=[1, 2, 3, 4]), "obj_id must be an integer"),
        (req(cmd="add", obj_id=1), "needs points, a box or a mask"),
        (req(cmd="add", obj_id=1, box=[1, 2, 3]), "box must be"),
        (req(cmd="add", obj_id=1, points=[[1, 2, 7]]), "labels must be 1"),
        (req(cmd="add", obj_id=1, points=[]), "points must be a list"),
        (req(cmd="add", obj_id=1, mask={"size": [0, 5], "counts": ""}), "mask size"),
        (req(cmd="add", obj_id=1, mask={"size": [4, 4], "counts": "~~~~"}), "cannot be decoded"),
        (req(cmd="remove"), "obj_id must be an integer"),
        (req(cmd="add", obj_id=1, box=[1, 2, 3, 4], seq=-1), "seq must be >= 0"),
        (b" " * (MAX_REQUEST_BYTES + 1), "exceeds the limit"),
    ],
)
def test_malformed_requests_are_explained(raw, message):
    with pytest.raises(RequestError, match=message):
        parse_request(raw)


@pytest.fixture
def server():
    s = ControlServer("tcp://127.0.0.1:*")
    yield s
    s.close()


@pytest.fixture
def client(server):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 2000)
    sock.connect(server.addr)
    yield sock
    sock.close()


def exchange(server, client, frames: list[bytes]) -> dict:
    client.send_multipart([b"", *frames])
    for _ in range(200):
        if server.poll(lambda r: {"cmd": r.cmd}):
            break
        zmq.select([server.socket], [], [], 0.01)
    parts = client.recv_multipart()
    assert parts[0] == b""
    return json.loads(parts[1])


def test_server_answers_good_and_bad_requests(server, client):
    assert exchange(server, client, [req(cmd="stats")]) == {"v": 1, "ok": True, "result": {"cmd": "stats"}}
    bad = exchange(server, client, [b"{nope"])
    assert bad["ok"] is False and "not UTF-8 JSON" in bad["error"]
    two = exchange(server, client, [req(cmd="list"), req(cmd="list")])
    assert two["ok"] is False and "one frame" in two["error"]
    assert (server.requests, server.errors) == (3, 2)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {"v": st.just(1), "cmd": st.sampled_from(["add", "correct", "remove", "reset", "list", "fly"])},
            optional={
                "obj_id": st.one_of(st.integers(), st.text(max_size=3), st.none()),
                "box": st.lists(st.one_of(st.integers(), st.floats(), st.text(max_size=2)), max_size=6),
                "points": st.lists(st.lists(st.one_of(st.integers(-5, 5), st.floats()), max_size=4), max_size=4),
                "mask": st.fixed_dictionaries({"size": st.lists(st.integers(-2, 40), max_size=3),
                                               "counts": st.text(max_size=20)}),
                "seq": st.one_of(st.integers(), st.floats()),
            },
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_any_request_gets_a_reply(server, client, body):
    reply = exchange(server, client, [body])
    assert reply["v"] == 1 and isinstance(reply["ok"], bool)
    if not reply["ok"]:
        assert isinstance(reply["error"], str) and reply["error"]


def test_an_oversized_peer_is_disconnected_and_the_next_client_is_served(server, client):
    """A message beyond ZMQ_MAXMSGSIZE makes ZeroMQ drop that peer: it gets no reply at all."""
    client.send_multipart([b"", b" " * (HARD_LIMIT_BYTES + 1)])
    for _ in range(50):
        server.poll(lambda r: {"cmd": r.cmd})
        zmq.select([server.socket], [], [], 0.01)
    with pytest.raises(zmq.Again):
        client.recv_multipart()  # RCVTIMEO 2 s: nothing comes back
    fresh = zmq.Context.instance().socket(zmq.DEALER)
    fresh.setsockopt(zmq.LINGER, 0)
    fresh.setsockopt(zmq.RCVTIMEO, 2000)
    fresh.connect(server.addr)
    try:
        assert exchange(server, fresh, [req(cmd="stats")])["ok"] is True
    finally:
        fresh.close()
