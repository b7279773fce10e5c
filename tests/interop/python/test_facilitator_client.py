"""The Python SDK (PyPI `x402`) as a resource server uses it: its facilitator client calls our
/supported, /verify and /settle, and must parse every answer, valid and invalid, into its own types.
Payments are signed by the SDK's own EVM client scheme.

    X402_STACK_DIR=... X402_BASE_URL=http://127.0.0.1:4020 python -m unittest -v test_facilitator_client

Runs against the local server (X402_BASE_URL); the Lambda functions answer the same bytes (the node
tests drive both front ends).
"""

import json
import os
import unittest

from eth_account import Account
from web3 import Web3
from x402 import x402ClientSync
from x402.http import FacilitatorConfig, HTTPFacilitatorClientSync
from x402.mechanisms.evm.exact import ExactEvmScheme
from x402.mechanisms.evm.exact.v1.client import ExactEvmSchemeV1
from x402.schemas import PaymentRequired, PaymentRequirements, ResourceInfo, SettleResponse, VerifyResponse
from x402.schemas.v1 import PaymentRequiredV1, PaymentRequirementsV1

PRICE = "1000"  # 0.001 USDC, 6 decimals
TOKEN_ABI = [
    {"name": "balanceOf", "type": "function", "stateMutability": "view",
     "inputs": [{"name": "owner", "type": "address"}], "outputs": [{"name": "", "type": "uint256"}]},
]


def load_stack():
    with open(os.path.join(os.environ["X402_STACK_DIR"], "stack.json"), encoding="utf-8") as f:
        return json.load(f)


STACK = load_stack()
CHAIN = Web3(Web3.HTTPProvider(STACK["ANVIL_URL"]))
TOKEN = CHAIN.eth.contract(address=Web3.to_checksum_address(STACK["X402_TOKEN"]), abi=TOKEN_ABI)
# The stack's fourth payer: the node tests use payers of their own, the Rust tests finished before.
PAYER = Account.from_key(STACK["payers"][3]["privateKey"])


def facilitator():
    """The SDK's client, as a resource server configures it. Use it in a `with` block: it owns a connection pool."""
    return HTTPFacilitatorClientSync(FacilitatorConfig(url=os.environ["X402_BASE_URL"]))


def requirements(pay_to, amount=PRICE, max_timeout_seconds=300):
    return PaymentRequirements(
        scheme="exact",
        network="eip155:84532",
        asset=STACK["X402_TOKEN"],
        amount=amount,
        pay_to=pay_to,
        max_timeout_seconds=max_timeout_seconds,
        extra={"name": STACK["X402_TOKEN_NAME"], "version": STACK["X402_TOKEN_VERSION"]},
    )


def pay(reqs):
    """A payment for `reqs`, signed by the SDK's exact EVM client for PAYER."""
    client = x402ClientSync().register("eip155:84532", ExactEvmScheme(PAYER))
    return client.create_payment_payload(
        PaymentRequired(x402_version=2, resource=ResourceInfo(url="http://interop.test/report"), accepts=[reqs])
    )


def fresh_address():
    return Account.create().address


def with_signature(payload, signature):
    inner = dict(payload.payload, signature=signature)
    return payload.model_copy(update={"payload": inner})


def other_signature(payload):
    """The same authorization signed by someone else: a well-formed signature that is not the payer's."""
    other = x402ClientSync().register("eip155:84532", ExactEvmScheme(Account.create()))
    forged = other.create_payment_payload(PaymentRequired(x402_version=2, accepts=[payload.accepted]))
    return forged.payload["signature"]


class Supported(unittest.TestCase):
    def test_supported_parses_and_lists_v2_and_v1_kinds_and_the_lanes(self):
        with facilitator() as client:
            supported = client.get_supported()
        kinds = {(k.x402_version, k.scheme, k.network) for k in supported.kinds}
        self.assertEqual(kinds, {(2, "exact", "eip155:84532"), (1, "exact", "base-sepolia"), (2, "upto", "eip155:84532")})
        # upto names the lane that settles it (the stack's last), as infra/stack/facilitator-env.sh configures.
        upto = next(k for k in supported.kinds if k.scheme == "upto")
        self.assertEqual(upto.extra["facilitatorAddress"].lower(), STACK["lanes"][-1]["address"].lower())
        # payment-identifier for every payment; eip2612GasSponsoring for Permit2 payments.
        self.assertEqual(sorted(supported.extensions), ["eip2612GasSponsoring", "payment-identifier"])
        lanes = sorted(lane["address"].lower() for lane in STACK["lanes"])
        self.assertEqual(sorted(a.lower() for a in supported.signers["eip155:*"]), lanes)


class ValidPayment(unittest.TestCase):
    def test_verify_then_settle_pays_once_and_a_repeat_is_not_a_second_success(self):
        pay_to = fresh_address()
        reqs = requirements(pay_to)
        payload = pay(reqs)
        with facilitator() as client:
            verified = client.verify(payload, reqs)
            self.assertIsInstance(verified, VerifyResponse)
            self.assertTrue(verified.is_valid, verified)
            self.assertEqual(verified.payer.lower(), PAYER.address.lower())

            settled = client.settle(payload, reqs)
            self.assertIsInstance(settled, SettleResponse)
            self.assertTrue(settled.success, settled)
            self.assertEqual(settled.network, "eip155:84532")
            self.assertEqual(settled.payer.lower(), PAYER.address.lower())
            self.assertEqual(CHAIN.eth.get_transaction_receipt(settled.transaction)["status"], 1)
            self.assertEqual(TOKEN.functions.balanceOf(pay_to).call(), int(PRICE))

            # One success per payment: a repeat is told the nonce is used, and names nothing.
            again = client.settle(payload, reqs)
            self.assertFalse(again.success, again)
            self.assertEqual(again.error_reason, "invalid_exact_evm_nonce_already_used")
            self.assertEqual(again.transaction, "")
            self.assertEqual(TOKEN.functions.balanceOf(pay_to).call(), int(PRICE))

            used = client.verify(payload, reqs)
            self.assertFalse(used.is_valid)
            self.assertEqual(used.invalid_reason, "invalid_exact_evm_nonce_already_used")

    def test_v1_payment_verifies_and_settles(self):
        pay_to = fresh_address()
        reqs = PaymentRequirementsV1(
            scheme="exact",
            network="base-sepolia",
            max_amount_required=PRICE,
            resource="http://interop.test/report",
            description="interop test report",
            pay_to=pay_to,
            max_timeout_seconds=300,
            asset=STACK["X402_TOKEN"],
            extra={"name": STACK["X402_TOKEN_NAME"], "version": STACK["X402_TOKEN_VERSION"]},
        )
        client = x402ClientSync().register_v1("base-sepolia", ExactEvmSchemeV1(PAYER))
        payload = client.create_payment_payload(PaymentRequiredV1(x402_version=1, accepts=[reqs]))
        self.assertEqual(payload.x402_version, 1)

        with facilitator() as client:
            verified = client.verify(payload, reqs)
            settled = client.settle(payload, reqs)
        self.assertTrue(verified.is_valid, verified)
        self.assertTrue(settled.success, settled)
        self.assertEqual(settled.network, "base-sepolia")
        self.assertEqual(CHAIN.eth.get_transaction_receipt(settled.transaction)["status"], 1)
        self.assertEqual(TOKEN.functions.balanceOf(pay_to).call(), int(PRICE))


class InvalidPayments(unittest.TestCase):
    """Each refusal is a 200 the SDK parses into its own type, with the reference's reason string."""

    def assert_refused(self, payload, reqs, reason):
        with facilitator() as client:
            verified = client.verify(payload, reqs)
            settled = client.settle(payload, reqs)
        self.assertIsInstance(verified, VerifyResponse)
        self.assertFalse(verified.is_valid, verified)
        self.assertEqual(verified.invalid_reason, reason, verified)
        self.assertEqual(verified.payer.lower(), PAYER.address.lower())
        self.assertIsInstance(settled, SettleResponse)
        self.assertFalse(settled.success, settled)
        self.assertEqual(settled.error_reason, reason, settled)
        self.assertEqual(settled.transaction, "")

    def test_a_signature_by_someone_else(self):
        reqs = requirements(fresh_address())
        payload = pay(reqs)
        self.assert_refused(with_signature(payload, other_signature(payload)), reqs, "invalid_exact_evm_signature")

    def test_an_expired_authorization(self):
        # The SDK signs validBefore = now + maxTimeoutSeconds: 1 s is inside the facilitators' 6 s margin.
        reqs = requirements(fresh_address(), max_timeout_seconds=1)
        payload = pay(reqs)
        self.assert_refused(payload, reqs, "invalid_exact_evm_payload_authorization_valid_before")

    def test_a_payment_to_another_recipient(self):
        payload = pay(requirements(fresh_address()))
        self.assert_refused(payload, requirements(fresh_address()), "invalid_exact_evm_recipient_mismatch")

    def test_a_payment_of_another_amount(self):
        payload = pay(requirements(fresh_address()))
        reqs = payload.accepted.model_copy(update={"amount": "2000"})
        self.assert_refused(payload, reqs, "invalid_exact_evm_payload_authorization_value_mismatch")

    def test_an_unusable_body_is_a_400_the_client_reports(self):
        # The SDK's bytes entry point sends what it is given: requirements that are not an object.
        payload = pay(requirements(fresh_address()))
        payload_bytes = payload.model_dump_json(by_alias=True, exclude_none=True).encode()
        with facilitator() as client:
            for call in (client.verify_from_bytes, client.settle_from_bytes):
                with self.assertRaises(ValueError) as raised:
                    call(payload_bytes, b'"not an object"')
                self.assertIn("(400)", str(raised.exception))
                self.assertIn("invalid_payment_requirements", str(raised.exception))


    def test_an_oversized_body_is_a_413_the_client_reports(self):
        # Over the facilitator's default 64 KiB limit (X402_MAX_BODY_BYTES); refused before parsing.
        reqs = requirements(fresh_address())
        payload = pay(reqs).model_dump(by_alias=True, exclude_none=True)
        payload["padding"] = "x" * 70_000
        with facilitator() as client:
            with self.assertRaises(ValueError) as raised:
                client.verify_from_bytes(json.dumps(payload).encode(), reqs.model_dump_json(by_alias=True).encode())
        self.assertIn("(413)", str(raised.exception))
        self.assertIn("invalid_payload", str(raised.exception))


if __name__ == "__main__":
    unittest.main()
