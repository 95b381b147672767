//! The agent's only unsafe code: thin wrappers over libnftnl (through `nftnl-sys`) for what the
//! safe `nftnl` crate lacks — sets with any flags (named, interval, anonymous with a size),
//! verdict maps and their `goto chain` elements, interval-end and open-interval elements,
//! lookups with the invert flag or the verdict register, `range`, `fib`, `log`, `masquerade`
//! with flags, payload loads of any offset and length — plus two netlink socket options.
//!
//! Every wrapper owns its libnftnl object and frees it on drop; every string or buffer handed
//! to libnftnl is copied by libnftnl before the call returns, so no Rust borrow outlives a call.

use std::ffi::{c_int, c_void, CStr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use nftnl::expr::Expression;
use nftnl::{MsgType, NlMsg, Rule};
use nftnl_sys as sys;

/// Every object here lives in an `inet` table.
const FAMILY: u16 = libc::NFPROTO_INET as u16;

/// Ceiling on the estimated size of one set-element message. The element list is a netlink
/// attribute whose length is a `u16`, and `NlMsg::write` may only fill
/// `nftnl::nft_nlmsg_maxsize()` bytes, so stay well under 64 KiB.
const ELEMS_MSG_BUDGET: usize = 48 * 1024;

/// Longest key libnftnl copies into an element (`NFT_DATA_VALUE_MAXLEN`).
const MAX_KEY_LEN: usize = 64;

/// `NFT_FIB_RESULT_OIF` and the `NFTA_FIB_F_*` flags (not in the `libc` crate).
const NFT_FIB_RESULT_OIF: u32 = 1;
const NFTA_FIB_F_SADDR: u32 = 1 << 0;
const NFTA_FIB_F_IIF: u32 = 1 << 3;
const NFTA_FIB_F_PRESENT: u32 = 1 << 5;

/// `NF_NAT_RANGE_PROTO_RANDOM_FULLY`.
const NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 0x10;

/// Element userdata `nft` attaches to the start of an interval that runs to the top key:
/// attribute `NFTNL_UDATA_SET_ELEM_FLAGS` (1), length 4, value `NFTNL_SET_ELEM_F_INTERVAL_OPEN`.
const OPEN_INTERVAL_UDATA: [u8; 6] = [1, 4, 1, 0, 0, 0];

/// Panics are not an option inside `NlMsg::write`, and a failed tiny allocation leaves
/// nothing sensible to do: abort, as `nftnl` itself does.
fn alloc_or_abort<T>(ptr: *mut T) -> NonNull<T> {
    NonNull::new(ptr).unwrap_or_else(|| std::process::abort())
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// An owned `nftnl_set`.
struct RawSet(NonNull<sys::nftnl_set>);

impl RawSet {
    fn new(table: &CStr, name: &CStr) -> Self {
        // SAFETY: nftnl_set_alloc has no preconditions; a null result aborts.
        let set = Self(alloc_or_abort(unsafe { sys::nftnl_set_alloc() }));
        // SAFETY: `set.0` is a live set we own; libnftnl copies both strings.
        unsafe {
            sys::nftnl_set_set_u32(set.0.as_ptr(), sys::NFTNL_SET_FAMILY as u16, u32::from(FAMILY));
            sys::nftnl_set_set_str(set.0.as_ptr(), sys::NFTNL_SET_TABLE as u16, table.as_ptr());
            sys::nftnl_set_set_str(set.0.as_ptr(), sys::NFTNL_SET_NAME as u16, name.as_ptr());
        }
        set
    }

    fn set_u32(&mut self, attr: u32, value: u32) {
        // SAFETY: `self.0` is a live set we own; u32 attributes are copied.
        unsafe { sys::nftnl_set_set_u32(self.0.as_ptr(), attr as u16, value) };
    }
}

impl Drop for RawSet {
    fn drop(&mut self) {
        // SAFETY: we own the set (and the elements added to it); it is freed exactly once.
        unsafe { sys::nftnl_set_free(self.0.as_ptr()) };
    }
}

/// Writes the header of a `NFT_MSG_*` message and returns it.
///
/// # Safety
/// `buf` must have room for `nftnl::nft_nlmsg_maxsize()` bytes (the `NlMsg::write` contract).
unsafe fn build_hdr(buf: *mut c_void, msg: c_int, flags: c_int, seq: u32) -> *mut libc::nlmsghdr {
    // SAFETY: forwarded from the caller; libnftnl only writes the 20-byte header here.
    unsafe { sys::nftnl_nlmsg_build_hdr(buf.cast(), msg as u16, FAMILY, flags as u16, seq) }
}

/// What a set or map is, for `NFT_MSG_NEWSET`.
pub(super) struct SetDef<'a> {
    pub table: &'a CStr,
    pub name: &'a CStr,
    /// Transaction-local id, so rules and elements in the same batch can find the set (the
    /// only way to find an anonymous set, whose name the kernel picks).
    pub id: u32,
    /// `NFT_SET_*` flags.
    pub flags: u32,
    pub key_type: u32,
    pub key_len: u32,
    /// A verdict map (`NFT_DATA_VERDICT` data).
    pub verdict_map: bool,
    /// Number of elements, which `nft` declares for anonymous sets.
    pub size: Option<u32>,
    /// Byte order of the keys (`nft`'s `BYTEORDER_*`), kept in the set's userdata: `nft list`
    /// needs it to print string keys such as interface names.
    pub key_byteorder: u32,
}

/// A `NFT_MSG_NEWSET` / `NFT_MSG_DELSET` message.
pub(super) struct SetMsg(RawSet);

impl SetMsg {
    pub fn new(def: &SetDef<'_>) -> Self {
        let mut set = RawSet::new(def.table, def.name);
        set.set_u32(sys::NFTNL_SET_ID, def.id);
        set.set_u32(sys::NFTNL_SET_FLAGS, def.flags);
        set.set_u32(sys::NFTNL_SET_KEY_TYPE, def.key_type);
        set.set_u32(sys::NFTNL_SET_KEY_LEN, def.key_len);
        if def.verdict_map {
            set.set_u32(sys::NFTNL_SET_DATA_TYPE, libc::NFT_DATA_VERDICT);
        }
        if let Some(size) = def.size {
            set.set_u32(sys::NFTNL_SET_DESC_SIZE, size);
        }
        // Userdata as `nft` writes it: NFTNL_UDATA_SET_KEYBYTEORDER, and for maps
        // NFTNL_UDATA_SET_DATABYTEORDER (verdicts have none), each a type, a length of 4 and
        // a native-endian u32.
        let mut udata = vec![0u8, 4];
        udata.extend_from_slice(&def.key_byteorder.to_ne_bytes());
        if def.verdict_map {
            set.set_u32(sys::NFTNL_SET_DATA_LEN, 0);
            udata.extend_from_slice(&[1, 4]);
            udata.extend_from_slice(&0u32.to_ne_bytes());
        }
        // SAFETY: the set is live; libnftnl copies the userdata bytes.
        unsafe {
            sys::nftnl_set_set_data(
                set.0.as_ptr(),
                sys::NFTNL_SET_USERDATA as u16,
                udata.as_ptr().cast(),
                udata.len() as u32,
            );
        }
        Self(set)
    }

    /// Just enough to name the set in a delete.
    pub fn named(table: &CStr, name: &CStr) -> Self {
        Self(RawSet::new(table, name))
    }
}

// SAFETY: a set definition holds two names of at most 256 bytes and a few u32s: far below
// `nft_nlmsg_maxsize()`.
unsafe impl NlMsg for SetMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let (msg, flags) = match msg_type {
            MsgType::Add => (libc::NFT_MSG_NEWSET, libc::NLM_F_CREATE | libc::NLM_F_ACK),
            MsgType::Del => (libc::NFT_MSG_DELSET, libc::NLM_F_ACK),
        };
        // SAFETY: the caller gives a buffer of `nft_nlmsg_maxsize()` bytes; the set is live.
        unsafe {
            let hdr = build_hdr(buf, msg, flags, seq);
            sys::nftnl_set_nlmsg_build_payload(hdr, (self.0).0.as_ptr());
        }
    }
}

/// One set or map element as the kernel stores it.
pub(super) struct ElemData<'a> {
    pub key: &'a [u8],
    /// `NFT_SET_ELEM_INTERVAL_END`: the first key after an interval.
    pub interval_end: bool,
    /// The interval starting here runs to the top key (it has no end element).
    pub open_interval: bool,
    /// Map data: a verdict code (`NF_ACCEPT`, `NFT_GOTO`, …) and its chain.
    pub verdict: Option<(i32, Option<&'a CStr>)>,
}

impl ElemData<'_> {
    /// Upper bound of the element's size inside the message.
    fn cost(&self) -> usize {
        let mut cost = 4 + 8 + 8 + pad4(self.key.len());
        if self.open_interval {
            cost += 4 + pad4(OPEN_INTERVAL_UDATA.len());
        }
        if let Some((_, chain)) = self.verdict {
            cost += 24 + chain.map_or(0, |c| 4 + pad4(c.to_bytes_with_nul().len()));
        }
        cost + 16
    }
}

/// A `NFT_MSG_NEWSETELEM` / `NFT_MSG_DELSETELEM` message: elements of one set, at most
/// [`ELEMS_MSG_BUDGET`] bytes of them.
pub(super) struct ElemsMsg {
    set: RawSet,
    bytes: usize,
    count: usize,
}

impl ElemsMsg {
    /// Elements of `set`; `id` finds a set created earlier in the same batch (anonymous sets
    /// must be found that way).
    pub fn new(table: &CStr, set: &CStr, id: Option<u32>) -> Self {
        let mut raw = RawSet::new(table, set);
        if let Some(id) = id {
            raw.set_u32(sys::NFTNL_SET_ID, id);
        }
        let bytes =
            64 + pad4(table.to_bytes_with_nul().len()) + pad4(set.to_bytes_with_nul().len());
        Self { set: raw, bytes, count: 0 }
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether `elem` still fits in this message.
    pub fn fits(&self, elem: &ElemData<'_>) -> bool {
        self.bytes + elem.cost() <= ELEMS_MSG_BUDGET
    }

    /// Adds `elem`; false (and nothing added) when it does not fit or its key is too long.
    pub fn push(&mut self, elem: &ElemData<'_>) -> bool {
        if !self.fits(elem) || elem.key.is_empty() || elem.key.len() > MAX_KEY_LEN {
            return false;
        }
        // SAFETY: nftnl_set_elem_alloc has no preconditions; a null result aborts.
        let e = alloc_or_abort(unsafe { sys::nftnl_set_elem_alloc() }).as_ptr();
        // SAFETY: `e` is a fresh element we own until nftnl_set_elem_add hands it to the set
        // (which then frees it); libnftnl copies the key (≤ 64 bytes, checked above), the chain
        // name and the userdata.
        unsafe {
            sys::nftnl_set_elem_set(
                e,
                sys::NFTNL_SET_ELEM_KEY as u16,
                elem.key.as_ptr().cast(),
                elem.key.len() as u32,
            );
            if elem.interval_end {
                sys::nftnl_set_elem_set_u32(
                    e,
                    sys::NFTNL_SET_ELEM_FLAGS as u16,
                    libc::NFT_SET_ELEM_INTERVAL_END as u32,
                );
            }
            if elem.open_interval {
                sys::nftnl_set_elem_set(
                    e,
                    sys::NFTNL_SET_ELEM_USERDATA as u16,
                    OPEN_INTERVAL_UDATA.as_ptr().cast(),
                    OPEN_INTERVAL_UDATA.len() as u32,
                );
            }
            if let Some((code, chain)) = elem.verdict {
                sys::nftnl_set_elem_set_u32(e, sys::NFTNL_SET_ELEM_VERDICT as u16, code as u32);
                if let Some(chain) = chain {
                    sys::nftnl_set_elem_set_str(
                        e,
                        sys::NFTNL_SET_ELEM_CHAIN as u16,
                        chain.as_ptr(),
                    );
                }
            }
            sys::nftnl_set_elem_add(self.set.0.as_ptr(), e);
        }
        self.bytes += elem.cost();
        self.count += 1;
        true
    }
}

// SAFETY: `push` keeps the estimated payload under ELEMS_MSG_BUDGET (48 KiB), below both the
// u16 attribute length and `nft_nlmsg_maxsize()`.
unsafe impl NlMsg for ElemsMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        // No NLM_F_EXCL: adding an element that is already there is not an error, which keeps
        // re-adding an interval set's shared "zero" end element harmless.
        let (msg, flags) = match msg_type {
            MsgType::Add => (libc::NFT_MSG_NEWSETELEM, libc::NLM_F_CREATE | libc::NLM_F_ACK),
            MsgType::Del => (libc::NFT_MSG_DELSETELEM, libc::NLM_F_ACK),
        };
        // SAFETY: the caller gives a buffer of `nft_nlmsg_maxsize()` bytes; the set is live.
        unsafe {
            let hdr = build_hdr(buf, msg, flags, seq);
            sys::nftnl_set_elems_nlmsg_build_payload(hdr, self.set.0.as_ptr());
        }
    }
}

/// Allocates an expression of kind `name`.
fn new_expr(name: &CStr) -> NonNull<sys::nftnl_expr> {
    // SAFETY: `name` is a valid C string; a null result (unknown kind or OOM) aborts.
    alloc_or_abort(unsafe { sys::nftnl_expr_alloc(name.as_ptr()) })
}

fn set_u32(e: NonNull<sys::nftnl_expr>, attr: u32, value: u32) {
    // SAFETY: `e` is a live expression; u32 attributes are copied.
    unsafe { sys::nftnl_expr_set_u32(e.as_ptr(), attr as u16, value) };
}

fn set_bytes(e: NonNull<sys::nftnl_expr>, attr: u32, data: &[u8]) {
    // SAFETY: `e` is a live expression; libnftnl copies `data` (register data, ≤ 64 bytes:
    // callers pass keys of at most 16 bytes).
    unsafe {
        sys::nftnl_expr_set(e.as_ptr(), attr as u16, data.as_ptr().cast(), data.len() as u32)
    };
}

fn set_str(e: NonNull<sys::nftnl_expr>, attr: u32, value: &CStr) {
    // SAFETY: `e` is a live expression; libnftnl copies the string.
    unsafe { sys::nftnl_expr_set_str(e.as_ptr(), attr as u16, value.as_ptr()) };
}

/// `payload load <len>b @ <base> header + <offset> => reg 1`.
pub(super) struct Payload {
    /// `NFT_PAYLOAD_{LL,NETWORK,TRANSPORT}_HEADER`.
    pub base: u32,
    pub offset: u32,
    pub len: u32,
}

impl Expression for Payload {
    fn to_expr(&self, _rule: &Rule<'_>) -> NonNull<sys::nftnl_expr> {
        let e = new_expr(c"payload");
        set_u32(e, sys::NFTNL_EXPR_PAYLOAD_DREG, libc::NFT_REG_1 as u32);
        set_u32(e, sys::NFTNL_EXPR_PAYLOAD_BASE, self.base);
        set_u32(e, sys::NFTNL_EXPR_PAYLOAD_OFFSET, self.offset);
        set_u32(e, sys::NFTNL_EXPR_PAYLOAD_LEN, self.len);
        e
    }
}

/// `range eq|neq reg 1 <from> <to>`.
pub(super) struct Range<'a> {
    pub neq: bool,
    pub from: &'a [u8],
    pub to: &'a [u8],
}

impl Expression for Range<'_> {
    fn to_expr(&self, _rule: &Rule<'_>) -> NonNull<sys::nftnl_expr> {
        let e = new_expr(c"range");
        let op = if self.neq { libc::NFT_RANGE_NEQ } else { libc::NFT_RANGE_EQ };
        set_u32(e, sys::NFTNL_EXPR_RANGE_SREG, libc::NFT_REG_1 as u32);
        set_u32(e, sys::NFTNL_EXPR_RANGE_OP, op as u32);
        set_bytes(e, sys::NFTNL_EXPR_RANGE_FROM_DATA, self.from);
        set_bytes(e, sys::NFTNL_EXPR_RANGE_TO_DATA, self.to);
        e
    }
}

/// `lookup reg 1 set <name> [0x1]` or, for a verdict map, `… dreg 0`.
pub(super) struct Lookup<'a> {
    pub set: &'a CStr,
    pub set_id: Option<u32>,
    pub invert: bool,
    /// Store the element's verdict (verdict maps).
    pub verdict: bool,
}

impl Expression for Lookup<'_> {
    fn to_expr(&self, _rule: &Rule<'_>) -> NonNull<sys::nftnl_expr> {
        let e = new_expr(c"lookup");
        set_u32(e, sys::NFTNL_EXPR_LOOKUP_SREG, libc::NFT_REG_1 as u32);
        set_str(e, sys::NFTNL_EXPR_LOOKUP_SET, self.set);
        if let Some(id) = self.set_id {
            set_u32(e, sys::NFTNL_EXPR_LOOKUP_SET_ID, id);
        }
        if self.verdict {
            set_u32(e, sys::NFTNL_EXPR_LOOKUP_DREG, libc::NFT_REG_VERDICT as u32);
        }
        if self.invert {
            set_u32(e, sys::NFTNL_EXPR_LOOKUP_FLAGS, libc::NFT_LOOKUP_F_INV as u32);
        }
        e
    }
}

/// `fib saddr . iif oif present => reg 1` (compare with 0 for "missing").
pub(super) struct FibSaddrIifOifPresent;

impl Expression for FibSaddrIifOifPresent {
    fn to_expr(&self, _rule: &Rule<'_>) -> NonNull<sys::nftnl_expr> {
        let e = new_expr(c"fib");
        set_u32(e, sys::NFTNL_EXPR_FIB_DREG, libc::NFT_REG_1 as u32);
        set_u32(e, sys::NFTNL_EXPR_FIB_RESULT, NFT_FIB_RESULT_OIF);
        set_u32(
            e,
            sys::NFTNL_EXPR_FIB_FLAGS,
            NFTA_FIB_F_SADDR | NFTA_FIB_F_IIF | NFTA_FIB_F_PRESENT,
        );
        e
    }
}

/// `log prefix <prefix>`.
pub(super) struct Log<'a> {
    pub prefix: &'a CStr,
}

impl Expression for Log<'_> {
    fn to_expr(&self, _rule: &Rule<'_>) -> NonNull<sys::nftnl_expr> {
        let e = new_expr(c"log");
        set_str(e, sys::NFTNL_EXPR_LOG_PREFIX, self.prefix);
        e
    }
}

/// `masq [flags fully-random]`.
pub(super) struct Masquerade {
    pub fully_random: bool,
}

impl Expression for Masquerade {
    fn to_expr(&self, _rule: &Rule<'_>) -> NonNull<sys::nftnl_expr> {
        let e = new_expr(c"masq");
        if self.fully_random {
            set_u32(e, sys::NFTNL_EXPR_MASQ_FLAGS, NAT_RANGE_PROTO_RANDOM_FULLY);
        }
        e
    }
}

/// Netlink options that `nix` has no wrapper for.
#[derive(Debug, Clone, Copy)]
pub(super) enum NetlinkOption {
    /// `NETLINK_CAP_ACK`: errors do not echo the failed message back.
    CapAck,
    /// `NETLINK_EXT_ACK`: errors may carry a message from the kernel.
    ExtAck,
}

/// Turns a boolean netlink socket option on.
pub(super) fn enable_netlink_option(
    fd: BorrowedFd<'_>,
    option: NetlinkOption,
) -> std::io::Result<()> {
    let name: c_int = match option {
        NetlinkOption::CapAck => 10,
        NetlinkOption::ExtAck => 11,
    };
    let on: c_int = 1;
    // SAFETY: `fd` is an open socket for the duration of the call; the option value is a
    // c_int read by the kernel before setsockopt returns.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_NETLINK,
            name,
            std::ptr::from_ref(&on).cast(),
            std::mem::size_of::<c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
