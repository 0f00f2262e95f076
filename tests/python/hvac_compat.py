"""Drives a Vigil cluster with hvac, the Python Vault client, exactly as a Vault user would.

Usage: hvac_compat.py <root token> <node1 url> <node2 url> <node3 url>

Every step goes through a different node so forwarding is exercised too. Exits non-zero (with the failing step) on
the first unexpected answer; prints "hvac compatibility: N checks passed" at the end.
"""

import sys
import time

import hvac
import hvac.exceptions as exc

token, urls = sys.argv[1], sys.argv[2:]
clients = [hvac.Client(url=u, token=token, timeout=15) for u in urls]
checks = 0


def check(name, condition):
    global checks
    if not condition:
        sys.exit(f"FAILED: {name}")
    checks += 1


def raises(name, exception, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exception:
        check(name, True)
        return
    except Exception as other:  # noqa: BLE001 - report what was raised instead
        sys.exit(f"FAILED: {name}: expected {exception.__name__}, got {type(other).__name__}: {other}")
    sys.exit(f"FAILED: {name}: expected {exception.__name__}, nothing raised")


def eventually(name, fn, timeout=20):
    deadline = time.time() + timeout
    while True:
        try:
            if fn():
                check(name, True)
                return
        except exc.VaultError:
            pass
        if time.time() > deadline:
            sys.exit(f"FAILED: {name} (timed out)")
        time.sleep(0.1)


c1, c2, c3 = clients
check("root token is authenticated", c1.is_authenticated())

# kv-v2: enable through a follower, write, read everywhere, patch, CAS, delete/undelete/destroy, metadata, list.
c2.sys.enable_secrets_engine("kv", path="app", options={"version": "2"})
mounts = c1.sys.list_mounted_secrets_engines()["data"]
check("kv-v2 mount is listed", mounts["app/"]["options"]["version"] == "2")
v1 = c3.secrets.kv.v2.create_or_update_secret("db", {"user": "alice"}, mount_point="app")
check("first write is version 1", v1["data"]["version"] == 1)
for i, c in enumerate(clients):
    eventually(
        f"version 1 readable on node {i + 1}",
        lambda c=c: c.secrets.kv.v2.read_secret_version("db", mount_point="app", raise_on_deleted_version=True)[
            "data"
        ]["data"]
        == {"user": "alice"},
    )
c1.secrets.kv.v2.patch("db", {"password": "s3cret"}, mount_point="app")
read = c1.secrets.kv.v2.read_secret_version("db", mount_point="app", raise_on_deleted_version=True)
check("patch merged", read["data"]["data"] == {"user": "alice", "password": "s3cret"})
check("patch made version 2", read["data"]["metadata"]["version"] == 2)
raises(
    "stale check-and-set is rejected",
    exc.InvalidRequest,
    c2.secrets.kv.v2.create_or_update_secret,
    "db",
    {"user": "mallory"},
    cas=1,
    mount_point="app",
)
c2.secrets.kv.v2.delete_latest_version_of_secret("db", mount_point="app")
raises(
    "deleted version reads as missing",
    exc.InvalidPath,
    c1.secrets.kv.v2.read_secret_version,
    "db",
    mount_point="app",
    raise_on_deleted_version=True,
)
c3.secrets.kv.v2.undelete_secret_versions("db", versions=[2], mount_point="app")
read = c1.secrets.kv.v2.read_secret_version("db", mount_point="app", raise_on_deleted_version=True)
check("undeleted version is back", read["data"]["data"]["password"] == "s3cret")
c1.secrets.kv.v2.destroy_secret_versions("db", versions=[1], mount_point="app")
eventually(
    "metadata replicated",
    lambda: c2.secrets.kv.v2.read_secret_metadata("db", mount_point="app")["data"]["versions"]["1"]["destroyed"],
)
meta = c2.secrets.kv.v2.read_secret_metadata("db", mount_point="app")["data"]
check("metadata: current version", meta["current_version"] == 2)
check("metadata: version 1 destroyed", meta["versions"]["1"]["destroyed"] is True)
c1.secrets.kv.v2.update_metadata("db", max_versions=5, custom_metadata={"owner": "team-a"}, mount_point="app")
meta = c1.secrets.kv.v2.read_secret_metadata("db", mount_point="app")["data"]
check("metadata update", meta["max_versions"] == 5 and meta["custom_metadata"] == {"owner": "team-a"})
check("list", c1.secrets.kv.v2.list_secrets("", mount_point="app")["data"]["keys"] == ["db"])

# kv-v1 still works through hvac.
c2.secrets.kv.v1.create_or_update_secret("legacy", {"a": "b"}, mount_point="kv")
check("kv-v1 read", c1.secrets.kv.v1.read_secret("legacy", mount_point="kv")["data"] == {"a": "b"})

# Policies and tokens: a reader token may read and is denied everything else.
c1.sys.create_or_update_policy("app-reader", 'path "app/data/*" {\n  capabilities = ["read"]\n}\n')
# c2 is another node: it lists the policy once it has applied the write (performance standbys are not linearizable).
eventually("policy listed", lambda: "app-reader" in c2.sys.list_acl_policies()["data"]["keys"])
created = c1.auth.token.create(policies=["app-reader"], ttl="1h")
reader_token = created["auth"]["client_token"]
check("token has the policy", created["auth"]["policies"] == ["app-reader", "default"])
reader = hvac.Client(url=urls[1], token=reader_token, timeout=15)
check("reader is authenticated", reader.is_authenticated())
eventually(
    "reader may read",
    lambda: reader.secrets.kv.v2.read_secret_version("db", mount_point="app", raise_on_deleted_version=True)["data"][
        "data"
    ]["user"]
    == "alice",
)
raises(
    "reader may not write",
    exc.Forbidden,
    reader.secrets.kv.v2.create_or_update_secret,
    "db",
    {"x": "y"},
    mount_point="app",
)
raises("reader may not list mounts", exc.Forbidden, reader.sys.list_mounted_secrets_engines)
raises("reader may not read kv-v1", exc.Forbidden, reader.secrets.kv.v1.read_secret, "legacy", mount_point="kv")
looked = c1.auth.token.lookup(reader_token)["data"]
check("lookup shows policies", looked["policies"] == ["app-reader", "default"])
c1.auth.token.revoke(reader_token)
eventually("revoked token is rejected", lambda: not reader.is_authenticated())

print(f"hvac compatibility: {checks} checks passed")
