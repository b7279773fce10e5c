// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// The structs of Permit2's signature-transfer interface, with the one call the x402 proxies
/// make. The ABI (function selectors, tuple layouts) is the canonical Permit2's, so code encoded
/// against the real contract calls this one unchanged.
interface ISignatureTransfer {
    struct TokenPermissions {
        address token;
        uint256 amount;
    }

    struct PermitTransferFrom {
        TokenPermissions permitted;
        uint256 nonce;
        uint256 deadline;
    }

    struct SignatureTransferDetails {
        address to;
        uint256 requestedAmount;
    }

    function permitWitnessTransferFrom(
        PermitTransferFrom calldata permit,
        SignatureTransferDetails calldata transferDetails,
        address owner,
        bytes32 witness,
        string calldata witnessTypeString,
        bytes calldata signature
    ) external;
}

/// @title Permit2's signature transfers, for the local stack.
/// @notice Uniswap's Permit2 is at 0x000000000022D473030F116dDEE9F6B43aC78BA3 on every chain but not
/// on a fresh anvil, so the stack places this contract's runtime code there with `anvil_setCode`.
/// Written here from Permit2's public interface and EIP-712 definitions, it keeps what x402
/// payments touch: single-token `permitTransferFrom` and `permitWitnessTransferFrom`, the unordered
/// nonce bitmap (`nonceBitmap`, `invalidateUnorderedNonces`), `DOMAIN_SEPARATOR`, and the same
/// custom errors, checked in the same order, so a facilitator sees the revert data it would see
/// on a real chain. The EIP-712 domain is Permit2's: name "Permit2", no version, chain id and
/// this address.
///
/// Left out: the batch transfers and the whole allowance-transfer half (`approve`, `permit`,
/// `allowance`, `transferFrom`, lockdown), which no x402 flow uses. No constructor ever runs, so the
/// domain separator is computed on every use instead of being cached in an immutable.
contract Permit2 {
    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,uint256 chainId,address verifyingContract)");
    bytes32 private constant NAME_HASH = keccak256("Permit2");
    bytes32 private constant TOKEN_PERMISSIONS_TYPEHASH = keccak256("TokenPermissions(address token,uint256 amount)");
    bytes32 private constant PERMIT_TRANSFER_FROM_TYPEHASH = keccak256(
        "PermitTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline)TokenPermissions(address token,uint256 amount)"
    );
    /// A witness transfer's type is this prefix followed by the caller's `witnessTypeString`, which
    /// names the witness field, closes the struct and appends the referenced types in EIP-712
    /// order, e.g. "Witness witness)TokenPermissions(address token,uint256 amount)Witness(...)".
    bytes private constant PERMIT_WITNESS_TRANSFER_FROM_PREFIX =
        "PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline,";
    bytes4 private constant ERC1271_MAGIC_VALUE = 0x1626ba7e;
    bytes4 private constant TRANSFER_FROM_SELECTOR = 0x23b872dd; // transferFrom(address,address,uint256)

    /// owner => word position (nonce >> 8) => bitmap of the word's 256 nonces (bit nonce & 0xff).
    mapping(address => mapping(uint256 => uint256)) public nonceBitmap;

    event UnorderedNonceInvalidation(address indexed owner, uint256 word, uint256 mask);

    error SignatureExpired(uint256 signatureDeadline);
    error InvalidAmount(uint256 maxAmount);
    error InvalidNonce();
    error InvalidSignatureLength();
    error InvalidSignature();
    error InvalidSigner();
    error InvalidContractSignature();

    function DOMAIN_SEPARATOR() public view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, block.chainid, address(this)));
    }

    /// Moves `transferDetails.requestedAmount` (at most the permitted amount) of the permitted token
    /// from `owner` to `transferDetails.to`, if `owner` signed the permit for msg.sender as spender.
    function permitTransferFrom(
        ISignatureTransfer.PermitTransferFrom calldata permit,
        ISignatureTransfer.SignatureTransferDetails calldata transferDetails,
        address owner,
        bytes calldata signature
    ) external {
        bytes32 structHash = keccak256(
            abi.encode(
                PERMIT_TRANSFER_FROM_TYPEHASH, _tokenPermissionsHash(permit), msg.sender, permit.nonce, permit.deadline
            )
        );
        _transferSigned(permit, transferDetails, owner, structHash, signature);
    }

    /// As `permitTransferFrom`, with one more field in the signed struct: `witness`, the EIP-712
    /// hash of the spender's own struct, whose type `witnessTypeString` describes. The spender (the
    /// x402 proxy) hashes the witness it is given, so the owner's signature binds its contents.
    function permitWitnessTransferFrom(
        ISignatureTransfer.PermitTransferFrom calldata permit,
        ISignatureTransfer.SignatureTransferDetails calldata transferDetails,
        address owner,
        bytes32 witness,
        string calldata witnessTypeString,
        bytes calldata signature
    ) external {
        bytes32 typeHash = keccak256(abi.encodePacked(PERMIT_WITNESS_TRANSFER_FROM_PREFIX, witnessTypeString));
        bytes32 structHash = keccak256(
            abi.encode(typeHash, _tokenPermissionsHash(permit), msg.sender, permit.nonce, permit.deadline, witness)
        );
        _transferSigned(permit, transferDetails, owner, structHash, signature);
    }

    /// Marks the nonces in `mask` of word `wordPos` used, for msg.sender: how an owner withdraws
    /// signatures it has handed out.
    function invalidateUnorderedNonces(uint256 wordPos, uint256 mask) external {
        nonceBitmap[msg.sender][wordPos] |= mask;
        emit UnorderedNonceInvalidation(msg.sender, wordPos, mask);
    }

    function _tokenPermissionsHash(ISignatureTransfer.PermitTransferFrom calldata permit)
        private
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(TOKEN_PERMISSIONS_TYPEHASH, permit.permitted.token, permit.permitted.amount));
    }

    /// The checks run in Permit2's order (deadline, amount, nonce, signature), so the same bad
    /// permit fails with the same error here as there.
    function _transferSigned(
        ISignatureTransfer.PermitTransferFrom calldata permit,
        ISignatureTransfer.SignatureTransferDetails calldata transferDetails,
        address owner,
        bytes32 structHash,
        bytes calldata signature
    ) private {
        // The deadline itself is still valid.
        if (block.timestamp > permit.deadline) revert SignatureExpired(permit.deadline);
        if (transferDetails.requestedAmount > permit.permitted.amount) revert InvalidAmount(permit.permitted.amount);
        _useNonce(owner, permit.nonce);
        _requireSignedBy(owner, keccak256(abi.encodePacked("\x19\x01", DOMAIN_SEPARATOR(), structHash)), signature);
        _pull(permit.permitted.token, owner, transferDetails.to, transferDetails.requestedAmount);
    }

    function _useNonce(address owner, uint256 nonce) private {
        uint256 bit = 1 << (nonce & 0xff);
        uint256 word = nonceBitmap[owner][nonce >> 8];
        if (word & bit != 0) revert InvalidNonce();
        nonceBitmap[owner][nonce >> 8] = word | bit;
    }

    /// An owner with code answers through ERC-1271; any other must have signed with its key, as a
    /// 65-byte (r, s, v) or a 64-byte EIP-2098 (r, vs) signature. Like Permit2, no low-s rule.
    function _requireSignedBy(address owner, bytes32 digest, bytes calldata signature) private view {
        if (owner.code.length > 0) {
            (bool ok, bytes memory answer) =
                owner.staticcall(abi.encodeWithSelector(ERC1271_MAGIC_VALUE, digest, signature));
            if (!ok || answer.length < 32 || abi.decode(answer, (bytes4)) != ERC1271_MAGIC_VALUE) {
                revert InvalidContractSignature();
            }
            return;
        }
        bytes32 r;
        bytes32 s;
        uint8 v;
        if (signature.length == 65) {
            (r, s) = abi.decode(signature[:64], (bytes32, bytes32));
            v = uint8(signature[64]);
        } else if (signature.length == 64) {
            bytes32 vs;
            (r, vs) = abi.decode(signature, (bytes32, bytes32));
            s = vs & bytes32(uint256(type(uint256).max >> 1));
            v = uint8(uint256(vs) >> 255) + 27;
        } else {
            revert InvalidSignatureLength();
        }
        address signer = ecrecover(digest, v, r, s);
        if (signer == address(0)) revert InvalidSignature();
        if (signer != owner) revert InvalidSigner();
    }

    /// ERC-20 `transferFrom` as Permit2 calls it (solmate's SafeTransferLib): a token that reverts
    /// or answers false fails with "TRANSFER_FROM_FAILED", whatever its own reason was, and a
    /// "token" without code succeeds, so a facilitator must check that the asset is a contract.
    function _pull(address token, address from, address to, uint256 amount) private {
        (bool ok, bytes memory answer) = token.call(abi.encodeWithSelector(TRANSFER_FROM_SELECTOR, from, to, amount));
        require(ok && (answer.length == 0 || (answer.length >= 32 && abi.decode(answer, (uint256)) == 1)), "TRANSFER_FROM_FAILED");
    }
}
