// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import "./TestSmartWallet.sol";

/// @title CREATE2 factory of TestSmartWallet, for ERC-6492 (counterfactual wallet) tests.
/// @notice A payer's wallet address is known before the wallet exists: `walletAddress(owner, salt)`.
/// The payer signs with the wallet's owner key and wraps the signature (ERC-6492) with a call to
/// `deploy(owner, salt)`; a facilitator that allows this factory deploys the wallet when it settles.
/// The owner is part of the CREATE2 salt and the wallet is initialised in the same call, so nobody
/// can deploy the address with another owner. Deploying a wallet that exists returns it unchanged,
/// as account factories do, so a repeated deployment is harmless.
/// Placed with `anvil_setCode` (it holds no state, so it needs no constructor).
contract TestSmartWalletFactory {
    event WalletDeployed(address indexed wallet, address indexed owner);

    function deploy(address owner, bytes32 salt) external returns (address wallet) {
        wallet = walletAddress(owner, salt);
        if (wallet.code.length > 0) return wallet;
        TestSmartWallet created = new TestSmartWallet{salt: _salt(owner, salt)}();
        created.initialize(owner);
        emit WalletDeployed(address(created), owner);
        return address(created);
    }

    function walletAddress(address owner, bytes32 salt) public view returns (address) {
        bytes32 codeHash = keccak256(type(TestSmartWallet).creationCode);
        bytes32 hash = keccak256(abi.encodePacked(bytes1(0xff), address(this), _salt(owner, salt), codeHash));
        return address(uint160(uint256(hash)));
    }

    function _salt(address owner, bytes32 salt) private pure returns (bytes32) {
        return keccak256(abi.encode(owner, salt));
    }
}
