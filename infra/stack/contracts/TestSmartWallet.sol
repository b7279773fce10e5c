// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title Minimal ERC-1271 smart contract wallet for tests.
/// @notice Stands in for a smart account paying with EIP-3009: the token asks it, through
/// `isValidSignature`, whether a signature is good, and it answers yes when its owner's key
/// signed the digest. Like the token, it is placed with `anvil_setCode` and set up by
/// `initialize`, since no constructor runs.
///
/// It can also be hostile, to test what a wallet's owner can make the facilitator pay: with
/// `hostile` set, it burns the gas it is given and refuses every signature, so the token reverts.
/// The tests set `hostile` (slot 1) with `anvil_setStorageAt` between the facilitator's simulation
/// and the block that mines its transaction, as an owner would by front-running that transaction
/// with one of its own: every simulation passes and every settlement reverts.
contract TestSmartWallet {
    bytes4 private constant MAGIC_VALUE = 0x1626ba7e;
    bytes4 private constant INVALID = 0xffffffff;

    address public owner;
    uint256 public hostile;

    function initialize(address owner_) external {
        require(owner == address(0), "TestSmartWallet: already initialized");
        require(owner_ != address(0), "TestSmartWallet: owner is the zero address");
        owner = owner_;
    }

    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        if (hostile != 0) {
            while (gasleft() > 2_000) {}
            return INVALID;
        }
        if (signature.length != 65) return INVALID;
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        address signer = ecrecover(hash, v, r, s);
        return signer != address(0) && signer == owner ? MAGIC_VALUE : INVALID;
    }
}
