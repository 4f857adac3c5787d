"""Wire compatibility: the Python grpcio client (a separate implementation of gRPC and
protobuf) calls the C rpc layer's test server, over every path the layer promises:
unary, server streaming, status codes and details, metadata, deadlines,
cancellation, size limits, unknown methods, malformed payloads, SIGTERM shutdown."""
import threading
import time

import grpc
import pytest

import testsvc_pb2 as pb
import testsvc_pb2_grpc as pb_grpc

BIG = 64 * 1024 * 1024


def channel(target):
    return grpc.insecure_channel(target, options=[
        ("grpc.max_receive_message_length", BIG),
        ("grpc.max_send_message_length", BIG),
    ])


@pytest.fixture
def server(start_test_server):
    s = start_test_server("--threads", "2")
    yield s
    assert s.stop() == 0


@pytest.fixture
def stub(server):
    with channel(server.target) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield pb_grpc.TestStub(ch)


def test_unary_round_trip(stub):
    reply = stub.Echo(pb.EchoRequest(text="héllo", data=bytes(range(256))), timeout=5)
    assert reply.text == "héllo"
    assert reply.data == bytes(range(256))
    assert 4000 < reply.deadline_ms <= 5100  # the client's clock started first


def test_no_deadline_seen_as_none(stub):
    assert stub.Echo(pb.EchoRequest(text="x")).deadline_ms == -1


def test_large_messages_both_ways(stub):
    data = bytes(range(256)) * (8 * 1024 * 1024 // 256)  # 8 MiB, over gRPC's 4 MiB default
    reply = stub.Echo(pb.EchoRequest(data=data), timeout=30)
    assert reply.data == data
    reply = stub.Echo(pb.EchoRequest(reply_bytes=12 * 1024 * 1024), timeout=30)
    assert len(reply.data) == 12 * 1024 * 1024 and reply.data[:2] == b"\xab\xab"


def test_metadata_reaches_handler(stub):
    reply = stub.Echo(pb.EchoRequest(metadata_key="x-request-id"), metadata=[("x-request-id", "abc-123")])
    assert reply.metadata_present and reply.metadata_value == "abc-123"


@pytest.mark.parametrize("code", [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT,
                                  grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED,
                                  grpc.StatusCode.UNAVAILABLE])
def test_status_codes_and_details(stub, code):
    with pytest.raises(grpc.RpcError) as e:
        stub.Echo(pb.EchoRequest(text="what went wrong", fail_code=code.name))
    assert e.value.code() == code
    assert e.value.details() == "what went wrong"


def test_server_stream(stub):
    assert [r.index for r in stub.Count(pb.CountRequest(count=50), timeout=10)] == list(range(50))


def test_stream_cancel_seen_by_server(stub):
    before = stub.Stats(pb.StatsRequest())
    it = stub.Count(pb.CountRequest(count=0, interval_ms=5))
    assert [next(it).index for _ in range(3)] == [0, 1, 2]
    it.cancel()
    with pytest.raises(grpc.RpcError) as e:
        for _ in it:
            pass
    assert e.value.code() == grpc.StatusCode.CANCELLED
    for _ in range(300):
        if stub.Stats(pb.StatsRequest()).streams_ended_dead > before.streams_ended_dead:
            break
        time.sleep(0.01)
    else:
        pytest.fail("the server-side stream handler never noticed the cancellation")


def test_deadline_exceeded(stub):
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        stub.Sleep(pb.SleepRequest(ms=5000), timeout=0.2)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 3


def test_unknown_method_unimplemented(server):
    with channel(server.target) as ch:
        for method in ["/pstest.Test/NoSuchMethod", "/no.Such/Service"]:
            call = ch.unary_unary(method, request_serializer=None, response_deserializer=None)
            with pytest.raises(grpc.RpcError) as e:
                call(b"", timeout=5)
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert method in e.value.details()


def test_malformed_payload_invalid_argument(server):
    with channel(server.target) as ch:
        raw = ch.unary_unary("/pstest.Test/Echo", request_serializer=None, response_deserializer=None)
        for payload in [b"\x0a\x64hi", b"\xff" * 10, b"\x12"]:
            with pytest.raises(grpc.RpcError) as e:
                raw(payload, timeout=5)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "malformed" in e.value.details()
        # the server is still up and answering
        assert pb_grpc.TestStub(ch).Echo(pb.EchoRequest(text="ok"), timeout=5).text == "ok"


def test_calls_without_a_request_message_are_refused(server):
    # a client may half-close without sending anything: the handler must not run on an
    # empty message as if one had been sent
    with channel(server.target) as ch:
        for method in ("/pstest.Test/Echo", "/pstest.Test/Count"):
            none = ch.stream_unary(method, request_serializer=None, response_deserializer=None)
            with pytest.raises(grpc.RpcError) as e:
                none(iter([]), timeout=5)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert "no request message" in e.value.details(), method
        assert pb_grpc.TestStub(ch).Echo(pb.EchoRequest(text="ok"), timeout=5).text == "ok"


def test_oversized_request_resource_exhausted(start_test_server):
    s = start_test_server("--max-message-bytes", str(1024 * 1024))
    with channel(s.target) as ch:
        stub = pb_grpc.TestStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            stub.Echo(pb.EchoRequest(data=b"\0" * (2 * 1024 * 1024)), timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.Echo(pb.EchoRequest(text="small"), timeout=5).text == "small"
    assert s.stop() == 0


def test_sigterm_lets_inflight_finish_and_ends_streams(start_test_server):
    s = start_test_server("--grace-ms", "5000")
    with channel(s.target) as ch:
        stub = pb_grpc.TestStub(ch)
        stream = stub.Count(pb.CountRequest(count=0, interval_ms=10))
        assert next(stream).index == 0
        result = {}

        def slow():
            try:
                result["reply"] = stub.Sleep(pb.SleepRequest(ms=500), timeout=10)
            except grpc.RpcError as e:
                result["error"] = e

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.15)
        t0 = time.monotonic()
        assert s.stop() == 0, s.proc.stderr.read()
        took = time.monotonic() - t0
        t.join()
        assert "error" not in result, result.get("error")
        assert result["reply"].slept_ms == 500 and not result["reply"].interrupted
        with pytest.raises(grpc.RpcError):
            for _ in stream:
                pass
        assert took < 4.5  # the live stream did not hold shutdown for the whole grace


def test_generated_stubs_for_every_proto():
    """Every protocol file compiles to importable Python stubs with its service."""
    import coordinator_pb2_grpc
    import inference_pb2
    import inference_pb2_grpc
    import ps_pb2_grpc

    assert hasattr(ps_pb2_grpc, "ParameterServerStub")
    assert hasattr(coordinator_pb2_grpc, "CoordinatorStub")
    assert hasattr(inference_pb2_grpc, "GRPCInferenceServiceStub")
    assert inference_pb2.ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"].number == 7
