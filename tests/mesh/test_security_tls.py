"""TLS, mutual TLS and the bearer token on real loopback gRPC, with a throwaway PKI made in the test.

The agent's port: TLS when certificates are given, mTLS with --tls-client-ca, every call but health
needs the token (UNAUTHENTICATED otherwise), a wrong CA or a missing client certificate fails the
handshake. End to end: agents and the coordinator CLI as subprocesses with all of it switched on.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import json
import logging
import os
import subprocess
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import HealthServicer
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from llmbench.agent.commands.generate import Prompt, generate_remote
from llmbench.agent.server.grpc_server import AgentServer
from llmbench.agent.engine.simulated import SimulatedEngine
from llmbench.agent.engine.types import EngineConfig
from llmbench.common.auth import ClientSecurity, ServerSecurity, read_token
from llmbench.coordinator.commands import run_local
from llmbench.proto import pb, rpc

TOKEN = "s3cret-token-0123456789abcdef"
SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass
class Pair:
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(folder: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pair:
    folder.mkdir(parents=True, exist_ok=True)
    pair = Pair(folder / f"{stem}.crt", folder / f"{stem}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return pair


class CA:
    def __init__(self, folder: Path, name: str = "llmbench test CA") -> None:
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.pem = _write(folder, "ca", self.cert, self.key).cert

    def issue(self, stem: str, dns: tuple[str, ...] = ("localhost",), ips: tuple[str, ...] = ("127.0.0.1",),
              client: bool = False) -> Pair:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        cert = (x509.CertificateBuilder().subject_name(_name(stem)).issuer_name(self.cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .sign(self.key, hashes.SHA256()))
        return _write(self.folder, stem, cert, key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca, other = CA(folder / "ca"), CA(folder / "other", "some other CA")
    return {"ca": ca, "other": other, "server": ca.issue("agent"), "client": ca.issue("coordinator", client=True),
            "stranger": other.issue("stranger", client=True), "folder": folder}


class SecureAgent:
    """An AgentServer (simulated engine) with the given security on its own event-loop thread."""

    def __init__(self, security: ServerSecurity, health_port: int | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = AgentServer(SimulatedEngine(EngineConfig(engine="simulated", tokens_per_s=50_000)),
                                  "secure-agent", "node", security)
        self.port = self.call(self.server.start("127.0.0.1", 0, health_port))
        self.call(self.server.load())
        self.address = f"127.0.0.1:{self.port}"

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self.call(self.server.stop(0.5))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def generate(security: ClientSecurity, address: str, n: int = 5) -> list[int]:
    with security.channel(address) as channel:
        replies = rpc.AgentStub(channel).Generate(
            pb.GenerateRequest(tokens=pb.TokenList(ids=[1, 2, 3]), max_new_tokens=n, ignore_eos=True),
            timeout=10, metadata=security.metadata)
        return [t for r in replies for t in r.tokens]


def rpc_error(fn) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        fn()
    return err.value


@pytest.fixture(scope="module")
def tls_agent(pki):
    agent = SecureAgent(ServerSecurity(str(pki["server"].cert), str(pki["server"].key), token=TOKEN), health_port=0)
    yield agent
    agent.close()


def test_tls_with_token_serves_and_verifies_the_server(tls_agent, pki):
    good = ClientSecurity(ca=str(pki["ca"].pem), token=TOKEN)
    assert len(generate(good, tls_agent.address)) == 5
    # A name in the certificate instead of the address (dns:/// discovery connects to pod IPs).
    assert len(generate(ClientSecurity(ca=str(pki["ca"].pem), server_name="localhost", token=TOKEN),
                        tls_agent.address)) == 5
    wrong_ca = rpc_error(lambda: generate(ClientSecurity(ca=str(pki["other"].pem), token=TOKEN), tls_agent.address))
    assert wrong_ca.code() == grpc.StatusCode.UNAVAILABLE
    wrong_name = rpc_error(lambda: generate(ClientSecurity(ca=str(pki["ca"].pem), server_name="evil.example",
                                                           token=TOKEN), tls_agent.address))
    assert wrong_name.code() == grpc.StatusCode.UNAVAILABLE
    plaintext = rpc_error(lambda: generate(ClientSecurity(token=TOKEN), tls_agent.address))
    assert plaintext.code() == grpc.StatusCode.UNAVAILABLE


def test_calls_without_the_token_are_unauthenticated_but_health_is_open(tls_agent, pki):
    for token in (None, "wrong", TOKEN + "x", TOKEN[:-1]):
        client = ClientSecurity(ca=str(pki["ca"].pem), token=token)
        with client.channel(tls_agent.address) as channel:
            stub = rpc.AgentStub(channel)
            calls = {
                "Generate": lambda: list(stub.Generate(pb.GenerateRequest(tokens=pb.TokenList(ids=[1])), timeout=10,
                                                       metadata=client.metadata)),
                "WatchStatus": lambda: next(stub.WatchStatus(pb.StatusRequest(), timeout=10, metadata=client.metadata)),
                "Serve": lambda: next(stub.Serve(iter([pb.ServeRequest(submit=pb.QueryBatch(queries=[
                    pb.Query(id=1, prompt_tokens=[1], max_new_tokens=2)]))]), timeout=10, metadata=client.metadata)),
                "reflection": lambda: next(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10,
                    metadata=client.metadata)),
                "unknown method": lambda: channel.unary_unary("/llmbench.v1.Agent/Nope")(b"", timeout=10,
                                                                                        metadata=client.metadata),
            }
            for name, call in calls.items():
                err = rpc_error(call)
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED, (name, token, err)
                assert "bearer token" in err.details()
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "llmbench.v1.Agent"):  # what kubelet and the coordinator probe
                reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                assert reply.status == SERVING


def test_plaintext_health_port_serves_only_health(tls_agent):
    with grpc.insecure_channel(f"127.0.0.1:{tls_agent.server.health_port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == SERVING
        err = rpc_error(lambda: list(rpc.AgentStub(channel).Generate(
            pb.GenerateRequest(tokens=pb.TokenList(ids=[1])), timeout=10,
            metadata=(("authorization", f"Bearer {TOKEN}"),))))
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED


def test_mutual_tls_needs_a_client_certificate_from_the_ca(pki):
    agent = SecureAgent(ServerSecurity(str(pki["server"].cert), str(pki["server"].key), str(pki["ca"].pem)))
    try:
        ca = str(pki["ca"].pem)
        ok = ClientSecurity(ca=ca, cert=str(pki["client"].cert), key=str(pki["client"].key))
        assert len(generate(ok, agent.address)) == 5
        for client in (ClientSecurity(ca=ca),
                       ClientSecurity(ca=ca, cert=str(pki["stranger"].cert), key=str(pki["stranger"].key))):
            assert rpc_error(lambda: generate(client, agent.address)).code() == grpc.StatusCode.UNAVAILABLE
    finally:
        agent.close()


def test_generate_names_a_refused_token_every_time():
    # A Serve write racing the agent's refusal used to turn about 1 in 10 refusals into INTERNAL.
    agent = SecureAgent(ServerSecurity(token=TOKEN))
    try:
        prompts = [Prompt(line=1, id=1, tokens=[1, 2, 3], text=None)]
        for token in [None, "wrong"] * 10:
            with pytest.raises(ConnectionError, match="UNAUTHENTICATED: missing or wrong bearer token"):
                asyncio.run(generate_remote(agent.address, prompts, 2, True, 10, ClientSecurity(token=token)))
        results = asyncio.run(generate_remote(agent.address, prompts, 2, True, 10, ClientSecurity(token=TOKEN)))
        assert len(results[0].tokens) == 2
    finally:
        agent.close()


def test_bad_security_settings_are_one_clear_line(pki, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="--tls-cert and --tls-key go together"):
        ServerSecurity(cert=str(pki["server"].cert))
    with pytest.raises(ValueError, match="mutual TLS.*needs --tls-cert"):
        ServerSecurity(client_ca=str(pki["ca"].pem))
    with pytest.raises(ValueError, match="--tls-key /nonexistent: No such file"):
        ServerSecurity(cert=str(pki["server"].cert), key="/nonexistent").credentials()
    with pytest.raises(ValueError, match="--tls-server-name needs --tls-ca"):
        ClientSecurity(server_name="agent")
    empty = tmp_path / "token"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="the file is empty"):
        read_token(str(empty))
    empty.write_text("two words\n")
    with pytest.raises(ValueError, match="printable ASCII without spaces"):
        read_token(str(empty))
    empty.write_text(TOKEN + "\n")
    assert read_token(str(empty)) == TOKEN
    monkeypatch.setenv("LLMBENCH_AUTH_TOKEN", "from-env")
    assert read_token(None) == "from-env" and read_token(str(empty)) == TOKEN
    monkeypatch.setenv("LLMBENCH_AUTH_TOKEN", "")
    assert read_token(None) is None


def test_thread_pool_server_interceptor(pki):
    """The same check on grpc's thread-pool server (the coordinator's status server is one)."""
    security = ServerSecurity(str(pki["server"].cert), str(pki["server"].key), token=TOKEN)
    server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=security.interceptors(aio=False))
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)
    echo = grpc.method_handlers_generic_handler("test.Echo", {
        "Say": grpc.unary_unary_rpc_method_handler(lambda request, context: request)})
    server.add_generic_rpc_handlers((echo,))
    port = server.add_secure_port("127.0.0.1:0", security.credentials())
    server.start()
    try:
        for token, ok in ((TOKEN, True), (None, False), ("nope", False)):
            client = ClientSecurity(ca=str(pki["ca"].pem), token=token)
            with client.channel(f"127.0.0.1:{port}") as channel:
                say = channel.unary_unary("/test.Echo/Say")
                if ok:
                    assert say(b"hi", timeout=10, metadata=client.metadata) == b"hi"
                else:
                    assert rpc_error(lambda: say(b"hi", timeout=10, metadata=client.metadata)).code() == \
                        grpc.StatusCode.UNAUTHENTICATED
                health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
                assert health.status == SERVING
    finally:
        server.stop(None)


CLI = [sys.executable, "-c", "import sys; from llmbench.cli import main; sys.exit(main())"]


@pytest.mark.slow
def test_mesh_over_mutual_tls_with_token(pki, tmp_path):
    """Agents and the coordinator CLI as processes, mTLS and the token on every channel; without the
    token the coordinator stops at once with one line; `llmbench generate --agent` speaks it too."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    server, client, ca = pki["server"], pki["client"], str(pki["ca"].pem)
    agent_args = (f"--tls-cert {server.cert} --tls-key {server.key} --tls-client-ca {ca} "
                  f"--auth-token-file {token_file}")
    agents = run_local.start_agents(argparse.Namespace(agents=2, engine="simulated", tokens_per_s=20_000,
                                                       agent_args=agent_args, model="tiny"), tmp_path)
    try:
        addresses = ",".join(a.address for a in agents)
        tls = ["--tls-ca", ca, "--tls-cert", str(client.cert), "--tls-key", str(client.key)]
        out = tmp_path / "out"
        r = subprocess.run([*CLI, "coordinator", "--agents", addresses, "--scenario", "Offline", "--mode", "accuracy",
                            "--max-samples", "20", "--output", str(out), *tls, "--auth-token-file", str(token_file)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        entries = json.loads((out / "mlperf_log_accuracy.json").read_text())
        assert sorted(e["qsl_idx"] for e in entries) == list(range(20))

        r = subprocess.run([*CLI, "coordinator", "--agents", addresses, "--output", str(tmp_path / "no"), *tls],
                           capture_output=True, text=True, timeout=60,
                           env={k: v for k, v in os.environ.items() if k != "LLMBENCH_AUTH_TOKEN"})
        errors = [line for line in r.stderr.splitlines() if "error:" in line]
        assert r.returncode == 2 and len(errors) == 1 and "refused the coordinator (UNAUTHENTICATED" in errors[0], \
            r.stderr

        r = subprocess.run([*CLI, "generate", "--agent", agents[0].address, "--max-new-tokens", "4", "--ignore-eos",
                            *tls, "--auth-token-file", str(token_file)],
                           input='{"id": "a", "tokens": [1, 2, 3]}\n', capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert len(json.loads(r.stdout)["tokens"]) == 4
    finally:
        run_local.stop_agents(agents)


def watch_once(security: ClientSecurity, address: str) -> pb.RunStatus:
    with security.channel(address) as channel:
        call = rpc.CoordinatorStub(channel).WatchRun(pb.WatchRunRequest(interval_ms=100), metadata=security.metadata,
                                                     timeout=10)
        return next(iter(call))


def test_run_status_channel_over_mutual_tls_with_token(pki):
    """The coordinator's WatchRun (for `llmbench tui --connect`) takes the same TLS and token as agents."""
    from llmbench.coordinator.observe.metrics import RunMetrics
    from llmbench.coordinator.observe.status_service import StatusServer
    from llmbench.tui.source import RemoteSource

    ca, server, client = pki["ca"], pki["server"], pki["client"]
    security = ServerSecurity(str(server.cert), str(server.key), str(ca.pem), TOKEN)
    status = StatusServer(RunMetrics(), "127.0.0.1", 0, security)
    address = f"127.0.0.1:{status.start()}"
    good = ClientSecurity(str(ca.pem), str(client.cert), str(client.key), token=TOKEN)
    try:
        assert watch_once(good, address).elapsed_s >= 0
        with pytest.raises(grpc.RpcError) as denied:
            watch_once(ClientSecurity(str(ca.pem), str(client.cert), str(client.key)), address)
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        stranger = pki["stranger"]
        with pytest.raises(grpc.RpcError):  # a client certificate from another CA is refused
            watch_once(ClientSecurity(str(ca.pem), str(stranger.cert), str(stranger.key), token=TOKEN), address)
        with pytest.raises(grpc.RpcError):  # plaintext to a TLS port never gets through
            watch_once(ClientSecurity(token=TOKEN), address)
        source = RemoteSource(address, interval_ms=100, security=good).start()
        try:
            deadline = time.monotonic() + 10
            while not source.poll() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert source.problem == ""
        finally:
            source.close()
    finally:
        status.stop(0.5)


def test_a_token_sent_in_plaintext_to_another_host_is_warned_about_once(caplog):
    """The agent warned about a plaintext token; the coordinator, which sends it, said nothing."""
    plain, with_tls = ClientSecurity(token="t0k"), ClientSecurity(token="t0k", ca=__file__)
    with caplog.at_level(logging.WARNING, logger="llmbench.auth"):
        for security, address in ((plain, "10.1.2.3:50051"), (plain, "10.1.2.3:50051"), (plain, "127.0.0.1:50051"),
                                  (plain, "[::1]:50051"), (ClientSecurity(), "10.9.9.9:1"), (with_tls, "10.1.2.4:1")):
            security.warn_if_exposed(address)
    said = [r.getMessage() for r in caplog.records]
    assert said == ["sending the bearer token in plaintext to 10.1.2.3:50051: anyone on the path can read it; "
                    "give --tls-ca (see docs/security.md)"]


def test_a_tls_mismatch_is_named_at_once_not_taken_for_silence(tls_agent, pki, tmp_path):
    """A coordinator whose TLS does not fit the agent's stops with what to fix, where it used to wait out
    --connect-timeout and say the agent "did not answer"; the TUI's watch and `generate` say the same."""
    plain_agent = SecureAgent(ServerSecurity(token=TOKEN))
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")

    def coordinator(address: str, *tls: str) -> list[str]:
        r = subprocess.run([*CLI, "coordinator", "--agents", address, "--connect-timeout", "60", "--output",
                            str(tmp_path / "out"), "--auth-token-file", str(token_file), *tls],
                           capture_output=True, text=True, timeout=50)  # well inside --connect-timeout
        errors = [line for line in r.stderr.splitlines() if "error:" in line]
        assert r.returncode == 2 and len(errors) == 1, r.stderr
        return errors[0]
    try:
        assert coordinator(tls_agent.address, "--tls-ca", str(pki["other"].pem)).endswith(
            f"agent {tls_agent.address}: TLS handshake failed: its certificate does not chain to --tls-ca")
        assert coordinator(plain_agent.address, "--tls-ca", str(pki["ca"].pem)).endswith(
            "TLS handshake failed: it does not speak TLS (leave out --tls-ca, or start it with --tls-cert and --tls-key)")
        assert "certificate does not hold the name dialled" in coordinator(
            tls_agent.address, "--tls-ca", str(pki["ca"].pem), "--tls-server-name", "evil.example")
        plaintext = ClientSecurity(token=TOKEN)  # a plain "Socket closed" may be a server going down: a hint only
        hint = plaintext.closed_hint(rpc_error(lambda: generate(plaintext, tls_agent.address)).details())
        assert hint == "; closed at once: if it serves TLS, give --tls-ca"

        from llmbench.tui.source import RemoteSource
        source = RemoteSource(tls_agent.address, interval_ms=100,
                              security=ClientSecurity(ca=str(pki["other"].pem), token=TOKEN)).start()
        try:
            deadline = time.monotonic() + 30
            while not source.ended and time.monotonic() < deadline:
                time.sleep(0.05)
            assert source.refused == f"{tls_agent.address}: TLS handshake failed: its certificate does not chain to --tls-ca"
        finally:
            source.close()
        prompts = [Prompt(line=1, id=1, tokens=[1, 2, 3], text=None)]
        with pytest.raises(ConnectionError, match="TLS handshake failed: its certificate does not chain"):
            asyncio.run(generate_remote(tls_agent.address, prompts, 2, True, 5,
                                        ClientSecurity(ca=str(pki["other"].pem), token=TOKEN)))
    finally:
        plain_agent.close()
