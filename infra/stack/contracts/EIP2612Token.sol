// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title Test token for the local stack: ERC-20 with EIP-2612 `permit` and no EIP-3009.
/// @notice The kind of token x402 pays through Permit2: it has no `transferWithAuthorization`, so a
/// payer approves Permit2 once, either with its own transaction or by signing an EIP-2612 permit
/// that the facilitator submits (the eip2612GasSponsoring extension). Written here from EIP-20 and
/// EIP-2612. Like EIP3009Token it is placed with `anvil_setCode`, so no constructor runs: its
/// identity (the EIP-712 domain's name and version among it) is set once by `initialize`, and the
/// domain separator is derived on every use. Not for production: one owner who mints.
contract EIP2612Token {
    bytes32 private constant EIP712_DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 public constant PERMIT_TYPEHASH =
        keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)");
    /// secp256k1 group order divided by two: signatures with a larger `s` are malleable twins.
    uint256 private constant SECP256K1_HALF_ORDER =
        0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    string public name;
    string public version;
    uint8 public decimals;
    address public owner;
    bool public initialized;

    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;
    /// EIP-2612: the next permit of each owner must carry this nonce.
    mapping(address => uint256) public nonces;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    /// Sets the token's identity once; stands in for the constructor that `anvil_setCode` skips.
    function initialize(string calldata name_, string calldata version_, uint8 decimals_, address owner_) external {
        require(!initialized, "EIP2612Token: already initialized");
        require(owner_ != address(0), "EIP2612Token: owner is the zero address");
        initialized = true;
        name = name_;
        version = version_;
        decimals = decimals_;
        owner = owner_;
    }

    /// ERC-20's optional symbol; the test tokens use their name.
    function symbol() external view returns (string memory) {
        return name;
    }

    function DOMAIN_SEPARATOR() public view returns (bytes32) {
        return keccak256(
            abi.encode(
                EIP712_DOMAIN_TYPEHASH, keccak256(bytes(name)), keccak256(bytes(version)), block.chainid, address(this)
            )
        );
    }

    /// EIP-5267: lets tooling discover the domain instead of being told it.
    function eip712Domain()
        external
        view
        returns (
            bytes1 fields,
            string memory name_,
            string memory version_,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        )
    {
        return (hex"0f", name, version, block.chainid, address(this), bytes32(0), new uint256[](0));
    }

    function mint(address to, uint256 value) external {
        require(msg.sender == owner, "EIP2612Token: caller is not the owner");
        require(to != address(0), "ERC20: mint to the zero address");
        totalSupply += value;
        balanceOf[to] += value;
        emit Transfer(address(0), to, value);
    }

    // ---- ERC-20 ----

    function transfer(address to, uint256 value) external returns (bool) {
        _transfer(msg.sender, to, value);
        return true;
    }

    function approve(address spender, uint256 value) external returns (bool) {
        _approve(msg.sender, spender, value);
        return true;
    }

    /// An allowance of 2^256-1 is never spent down, as in most deployed tokens.
    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            require(allowed >= value, "ERC20: transfer amount exceeds allowance");
            allowance[from][msg.sender] = allowed - value;
        }
        _transfer(from, to, value);
        return true;
    }

    // ---- EIP-2612 ----

    /// Sets `spender`'s allowance over `owner_`'s tokens to `value`, on `owner_`'s signature.
    /// The deadline itself is still valid; each signature works once (the nonce moves on).
    function permit(address owner_, address spender, uint256 value, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external
    {
        require(block.timestamp <= deadline, "EIP2612: permit expired");
        bytes32 structHash = keccak256(abi.encode(PERMIT_TYPEHASH, owner_, spender, value, nonces[owner_], deadline));
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", DOMAIN_SEPARATOR(), structHash));
        require(uint256(s) <= SECP256K1_HALF_ORDER, "EIP2612: invalid signature 's' value");
        address signer = ecrecover(digest, v, r, s);
        require(signer != address(0) && signer == owner_, "EIP2612: invalid signature");
        nonces[owner_] += 1;
        _approve(owner_, spender, value);
    }

    // ---- internals ----

    function _approve(address owner_, address spender, uint256 value) private {
        require(spender != address(0), "ERC20: approve to the zero address");
        allowance[owner_][spender] = value;
        emit Approval(owner_, spender, value);
    }

    function _transfer(address from, address to, uint256 value) private {
        require(from != address(0), "ERC20: transfer from the zero address");
        require(to != address(0), "ERC20: transfer to the zero address");
        uint256 balance = balanceOf[from];
        require(balance >= value, "ERC20: transfer amount exceeds balance");
        unchecked {
            balanceOf[from] = balance - value;
        }
        balanceOf[to] += value;
        emit Transfer(from, to, value);
    }
}
