"""Run moto server on 127.0.0.1 with KMS `MessageType=DIGEST` honoured.

moto 5.2.5 reads `MessageType` in KMS `Sign` and `Verify` but never passes it on:
the ECDSA key always hashes `Message` with the algorithm's hash, so a caller that
sends a 32-byte digest (as every Ethereum signer does: KMS cannot compute keccak256)
gets a signature over sha256(digest), which recovers to a random address. Real KMS
signs the digest as given. This launcher patches moto in-process before serving:

- the response handlers for `Sign` and `Verify` note, per request, whether the
  caller said DIGEST (a context variable: moto serves each request on its own thread);
- the ECDSA key's sign/verify then treat the message as prehashed, after checking
  its length against the algorithm, as KMS does. RAW requests still run moto's code.

The patch is written against one moto release (MOTO_VERSION in infra/versions.env)
and refuses to start on any other, so nobody runs an unpatched KMS by accident.

A second patch makes `Sign` refuse a key that is not enabled, as KMS does (moto signs with a
disabled key): the fault tests disable the lane keys to make KMS refuse.

Three more make moto behave (and keep up) under the load of concurrent callers:

- DynamoDB's item operations run one at a time (one lock around the backend's reads and writes).
  DynamoDB applies a conditional write atomically and a transaction in isolation; moto serves each
  request on its own thread and checks a condition, then writes, with nothing in between held, so
  two conditional writes could both pass, and a TransactWriteItems, which deep-copies the tables it
  touches for its rollback, failed with HTTP 500 ("dictionary changed size during iteration") when
  another request wrote the table during the copy. The facilitator's guarantees rest on those
  conditions (DESIGN I2-I4), so the emulator has to honour them.
- Which service a request is for is worked out once per Host header, not once per request: moto
  matches every request against the URL patterns of all its services, under a global lock, which
  was a tenth of its CPU in the settle load.
- TransactWriteItems backs up the items it touches for its rollback, not whole tables: moto
  deep-copied every table a transaction touched, so each one got slower as the payments table grew
  (15 ms after a few hundred payments, the largest single cost of a settlement on the local stack).
- werkzeug's one log line per request is off (`X402_MOTO_LOG_REQUESTS=1` turns it back on); errors
  are still logged.

Usage: launch.py PORT
"""

import contextvars
import functools
import importlib.metadata
import os
import pathlib
import sys
import threading

VERSIONS_ENV = pathlib.Path(__file__).resolve().parents[2] / "versions.env"


def pinned_moto_version() -> str:
    for line in VERSIONS_ENV.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MOTO_VERSION":
            return value.strip()
    sys.exit(f"launch.py: MOTO_VERSION missing from {VERSIONS_ENV}")


def patch_kms_digest_signing() -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
    from moto.kms.exceptions import ValidationException
    from moto.kms.responses import KmsResponse
    from moto.kms.utils import ECDSAPrivateKey, validate_signing_algorithm

    message_is_digest = contextvars.ContextVar("kms_message_is_digest", default=False)

    def remember_message_type(handler):
        def handle(self):
            token = message_is_digest.set(self._get_param("MessageType") == "DIGEST")
            try:
                return handler(self)
            finally:
                message_is_digest.reset(token)

        handle.__name__ = handler.__name__
        return handle

    KmsResponse.sign = remember_message_type(KmsResponse.sign)
    KmsResponse.verify = remember_message_type(KmsResponse.verify)

    # moto's private helper maps ECDSA_SHA_256/384/512 to the hash object.
    hash_for = ECDSAPrivateKey._ECDSAPrivateKey__hash_algorithm

    def prehashed(key, message: bytes, signing_algorithm: str) -> ec.ECDSA:
        validate_signing_algorithm(signing_algorithm, key.valid_signing_algorithms)
        algorithm = hash_for(key, signing_algorithm)
        if len(message) != algorithm.digest_size:
            raise ValidationException(
                f"Digest is invalid length for algorithm {signing_algorithm}."
            )
        return ec.ECDSA(Prehashed(algorithm))

    raw_sign = ECDSAPrivateKey.sign
    raw_verify = ECDSAPrivateKey.verify

    def sign(self, message: bytes, signing_algorithm: str) -> bytes:
        if not message_is_digest.get():
            return raw_sign(self, message, signing_algorithm)
        return self.private_key.sign(message, prehashed(self, message, signing_algorithm))

    def verify(self, message: bytes, signature: bytes, signing_algorithm: str) -> bool:
        if not message_is_digest.get():
            return raw_verify(self, message, signature, signing_algorithm)
        algorithm = prehashed(self, message, signing_algorithm)
        try:
            self.private_key.public_key().verify(signature, message, algorithm)
            return True
        except InvalidSignature:
            return False

    ECDSAPrivateKey.sign = sign
    ECDSAPrivateKey.verify = verify


def patch_kms_sign_needs_enabled_key() -> None:
    from moto.core.exceptions import JsonRESTError
    from moto.kms.models import KmsBackend

    raw_sign = KmsBackend.sign

    def sign(self, key_id, message, signing_algorithm):
        key = self.describe_key(key_id)
        if key.key_state != "Enabled":
            # KMS answers DisabledException (HTTP 400) for a disabled key.
            raise JsonRESTError("DisabledException", f"{key.arn} is {key.key_state.lower()}.")
        return raw_sign(self, key_id, message, signing_algorithm)

    KmsBackend.sign = sign


def patch_dynamodb_one_operation_at_a_time() -> None:
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()  # re-entrant: a transaction calls get_item, put_item, update_item

    def serialised(operation):
        @functools.wraps(operation)
        def run(self, *args, **kwargs):
            with lock:
                return operation(self, *args, **kwargs)

        return run

    for name in ("get_item", "put_item", "update_item", "delete_item", "query", "scan",
                 "transact_write_items", "execute_statement", "execute_transaction",
                 "batch_execute_statement"):
        setattr(DynamoDBBackend, name, serialised(getattr(DynamoDBBackend, name)))


def patch_transaction_backs_up_items() -> None:
    """moto's TransactWriteItems deep-copies each table it touches (`copy.deepcopy(table)`) and puts
    the copies back if the transaction is cancelled. Here, while one of our transactions runs on a
    thread, that copy is the live table itself (so moto's rollback puts back what is already
    there), and the items the transaction names are deep-copied before it runs and restored if it
    is cancelled. Runs under the DynamoDB lock (patched after this), so nothing else writes between
    the backup and the rollback."""
    import copy

    import moto.dynamodb.models as models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    in_transaction = threading.local()

    class CopyKeepingLiveTables:
        """The `copy` module as moto's DynamoDB models see it."""

        def __getattr__(self, name):
            return getattr(copy, name)

        @staticmethod
        def deepcopy(value, memo=None):
            if isinstance(value, Table) and getattr(in_transaction, "active", False):
                return value
            return copy.deepcopy(value, memo)

    models.copy = CopyKeepingLiveTables()

    def key_of(table, op_type, op):
        attrs = op.get("Item", {}) if op_type == "Put" else op.get("Key", {})
        hash_value = DynamoType(attrs[table.hash_key_attr])
        range_value = DynamoType(attrs[table.range_key_attr]) if table.range_key_attr else None
        return hash_value, range_value

    def put_back(table, hash_value, range_value, item):
        if item is None:
            table.delete_item(hash_value, range_value)
        elif range_value is not None:
            table.items[hash_value][range_value] = item
        else:
            table.items[hash_value] = item

    transact = DynamoDBBackend.transact_write_items

    @functools.wraps(transact)
    def transact_write_items(self, transact_items):
        saved = []
        for entry in transact_items:
            try:
                op_type, op = next(iter(entry.items()))
                table = self.tables[op["TableName"]]
                hash_value, range_value = key_of(table, op_type, op)
                item = table.get_item(hash_value, range_value)
            except Exception:  # noqa: BLE001 - malformed: moto's own code answers it
                continue
            saved.append((table, hash_value, range_value, copy.deepcopy(item)))
        in_transaction.active = True
        try:
            return transact(self, transact_items)
        except Exception:
            # The first backup of an item is its state before the transaction: restore it last.
            for table, hash_value, range_value, item in reversed(saved):
                put_back(table, hash_value, range_value, item)
            raise
        finally:
            in_transaction.active = False

    DynamoDBBackend.transact_write_items = transact_write_items


def patch_backend_lookup_once_per_host() -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    lookup = DomainDispatcherApplication.get_backend_for_host
    known = {}

    @functools.wraps(lookup)
    def get_backend_for_host(self, host):
        # Only found backends are kept: a miss makes the caller look at the body instead.
        if host not in known:
            backend = lookup(self, host)
            if not backend:
                return backend
            known[host] = backend
        return known[host]

    DomainDispatcherApplication.get_backend_for_host = get_backend_for_host


def quiet_request_log() -> None:
    from werkzeug.serving import WSGIRequestHandler

    if os.environ.get("X402_MOTO_LOG_REQUESTS") != "1":
        WSGIRequestHandler.log_request = lambda self, code="-", size="-": None


def main() -> None:
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: launch.py PORT")
    port = sys.argv[1]

    installed = importlib.metadata.version("moto")
    pinned = pinned_moto_version()
    if installed != pinned:
        sys.exit(
            f"launch.py: moto {installed} is installed but the KMS DIGEST patch was "
            f"written for {pinned}; rerun infra/install.sh or re-check the patch"
        )

    patch_kms_digest_signing()
    patch_kms_sign_needs_enabled_key()
    patch_transaction_backs_up_items()
    patch_dynamodb_one_operation_at_a_time()
    patch_backend_lookup_once_per_host()
    quiet_request_log()

    from moto.server import main as serve

    print(f"moto {installed} (patched: KMS DIGEST and key state, DynamoDB one operation at a time, transaction backups, backend lookup, request log) on 127.0.0.1:{port}", flush=True)
    serve(["--host", "127.0.0.1", "--port", port])


if __name__ == "__main__":
    main()
