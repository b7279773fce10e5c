// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ISignatureTransfer} from "./Permit2.sol";

/// EIP-2612's `permit`, the only token call the proxies make themselves.
interface IERC2612 {
    function permit(address owner, address spender, uint256 value, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external;
}

/// @title What the two x402 Permit2 proxies share, for the local stack.
/// @notice x402's proxies are the spender a payer names in its Permit2 signature. The payer also
/// signs a witness (at least the recipient `to` and `validAfter`), and a proxy passes Permit2 the
/// hash of the witness it was handed, so whoever submits the payment cannot change its recipient.
/// Written here from the x402 specs (scheme_exact_evm.md, scheme_upto_evm.md,
/// eip2612_gas_sponsoring.md) and the ABI that the official EVM SDK 2.27 encodes against: same
/// functions, tuples, type strings, custom errors and events, so the official SDK and a
/// facilitator built against the deployed proxies work with these unchanged.
///
/// Differences from the deployed contracts: they take Permit2's address in their constructor and
/// keep it in an immutable; `anvil_setCode` runs no constructor, so here it is a constant (the
/// canonical address, which is what the deployed proxies were built with). The re-entrancy lock
/// is a plain storage flag.
abstract contract X402Permit2ProxyBase {
    /// Canonical Permit2: where the payer's signature is checked and its nonce spent.
    ISignatureTransfer public constant PERMIT2 = ISignatureTransfer(0x000000000022D473030F116dDEE9F6B43aC78BA3);

    /// EIP-2612 permit for Permit2, signed by the payer; the eip2612GasSponsoring extension's fields.
    struct EIP2612Permit {
        uint256 value;
        uint256 deadline;
        bytes32 r;
        bytes32 s;
        uint8 v;
    }

    uint256 private locked;

    event Settled();
    event SettledWithPermit();
    /// The token's `permit` reverted; settlement still goes ahead, since an allowance already
    /// given (for instance by someone who submitted the same permit first) is as good. One event
    /// per kind of revert: Error(string), Panic(uint256), anything else.
    event EIP2612PermitFailedWithReason(address indexed token, address indexed owner, string reason);
    event EIP2612PermitFailedWithPanic(address indexed token, address indexed owner, uint256 errorCode);
    event EIP2612PermitFailedWithData(address indexed token, address indexed owner, bytes data);

    error InvalidAmount();
    error InvalidOwner();
    error InvalidDestination();
    error PaymentTooEarly();
    error Permit2612AmountMismatch();
    error ReentrancyGuardReentrantCall();

    modifier nonReentrant() {
        if (locked != 0) revert ReentrancyGuardReentrantCall();
        locked = 1;
        _;
        locked = 0;
    }

    /// Moves `amount` from `owner` to `to` through Permit2, which checks `signature` over the
    /// permit with this contract as spender and `witnessHash` as the witness.
    function _transfer(
        ISignatureTransfer.PermitTransferFrom calldata permit,
        uint256 amount,
        address owner,
        address to,
        uint256 validAfter,
        bytes32 witnessHash,
        bytes calldata signature
    ) internal {
        if (amount == 0) revert InvalidAmount();
        if (owner == address(0)) revert InvalidOwner();
        if (to == address(0)) revert InvalidDestination();
        // validAfter is inclusive, unlike EIP-3009's.
        if (block.timestamp < validAfter) revert PaymentTooEarly();
        PERMIT2.permitWitnessTransferFrom(
            permit,
            ISignatureTransfer.SignatureTransferDetails({to: to, requestedAmount: amount}),
            owner,
            witnessHash,
            _witnessTypeString(),
            signature
        );
    }

    /// Submits the payer's EIP-2612 permit giving Permit2 exactly the permitted amount. A permit
    /// for another amount is refused outright; a permit the token rejects is only reported, and
    /// Permit2's transfer then decides with whatever allowance exists.
    function _applyPermit(address token, address owner, EIP2612Permit calldata p, uint256 permittedAmount) internal {
        if (p.value != permittedAmount) revert Permit2612AmountMismatch();
        try IERC2612(token).permit(owner, address(PERMIT2), p.value, p.deadline, p.v, p.r, p.s) {}
        catch Error(string memory reason) {
            emit EIP2612PermitFailedWithReason(token, owner, reason);
        } catch Panic(uint256 errorCode) {
            emit EIP2612PermitFailedWithPanic(token, owner, errorCode);
        } catch (bytes memory data) {
            emit EIP2612PermitFailedWithData(token, owner, data);
        }
    }

    /// The tail of the Permit2 witness type: see Permit2.permitWitnessTransferFrom.
    function _witnessTypeString() internal pure virtual returns (string memory);
}

/// @title x402 exact Permit2 proxy (canonical address 0x402085c248EeA27D92E8b30b2C58ed07f9E20001).
/// @notice Transfers exactly the permitted amount to the witness's `to`.
contract X402ExactPermit2Proxy is X402Permit2ProxyBase {
    string public constant WITNESS_TYPE_STRING =
        "Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,uint256 validAfter)";
    bytes32 public constant WITNESS_TYPEHASH = keccak256("Witness(address to,uint256 validAfter)");

    struct Witness {
        address to;
        uint256 validAfter;
    }

    /// For a payer that has already approved Permit2 on the token.
    function settle(
        ISignatureTransfer.PermitTransferFrom calldata permit,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) external nonReentrant {
        _transfer(permit, permit.permitted.amount, owner, witness.to, witness.validAfter, _hash(witness), signature);
        emit Settled();
    }

    /// For a payer without that approval: applies its EIP-2612 permit for Permit2 first, in the
    /// same transaction (the eip2612GasSponsoring extension).
    function settleWithPermit(
        EIP2612Permit calldata permit2612,
        ISignatureTransfer.PermitTransferFrom calldata permit,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) external nonReentrant {
        _applyPermit(permit.permitted.token, owner, permit2612, permit.permitted.amount);
        _transfer(permit, permit.permitted.amount, owner, witness.to, witness.validAfter, _hash(witness), signature);
        emit SettledWithPermit();
    }

    function _hash(Witness calldata witness) private pure returns (bytes32) {
        return keccak256(abi.encode(WITNESS_TYPEHASH, witness.to, witness.validAfter));
    }

    function _witnessTypeString() internal pure override returns (string memory) {
        return WITNESS_TYPE_STRING;
    }
}

/// @title x402 upto Permit2 proxy (canonical address 0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002).
/// @notice Transfers any amount up to the permitted one, chosen by the facilitator that the payer
/// named in the witness: only that address may call.
contract X402UptoPermit2Proxy is X402Permit2ProxyBase {
    string public constant WITNESS_TYPE_STRING =
        "Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,address facilitator,uint256 validAfter)";
    bytes32 public constant WITNESS_TYPEHASH = keccak256("Witness(address to,address facilitator,uint256 validAfter)");

    struct Witness {
        address to;
        address facilitator;
        uint256 validAfter;
    }

    error AmountExceedsPermitted();
    error UnauthorizedFacilitator();

    function settle(
        ISignatureTransfer.PermitTransferFrom calldata permit,
        uint256 amount,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) external nonReentrant {
        _authorize(permit, amount, witness);
        _transfer(permit, amount, owner, witness.to, witness.validAfter, _hash(witness), signature);
        emit Settled();
    }

    function settleWithPermit(
        EIP2612Permit calldata permit2612,
        ISignatureTransfer.PermitTransferFrom calldata permit,
        uint256 amount,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) external nonReentrant {
        _authorize(permit, amount, witness);
        _applyPermit(permit.permitted.token, owner, permit2612, permit.permitted.amount);
        _transfer(permit, amount, owner, witness.to, witness.validAfter, _hash(witness), signature);
        emit SettledWithPermit();
    }

    /// Checked before anything else, in this order, as the deployed proxy does.
    function _authorize(ISignatureTransfer.PermitTransferFrom calldata permit, uint256 amount, Witness calldata witness)
        private
        view
    {
        if (amount > permit.permitted.amount) revert AmountExceedsPermitted();
        if (msg.sender != witness.facilitator) revert UnauthorizedFacilitator();
    }

    function _hash(Witness calldata witness) private pure returns (bytes32) {
        return keccak256(abi.encode(WITNESS_TYPEHASH, witness.to, witness.facilitator, witness.validAfter));
    }

    function _witnessTypeString() internal pure override returns (string memory) {
        return WITNESS_TYPE_STRING;
    }
}
