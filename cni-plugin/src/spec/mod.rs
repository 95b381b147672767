//! The CNI protocol, pure: spec versions, the `CNI_*` environment, the network config, the
//! validated [`Request`], results in every version's shape, and the error codes.

mod env;
mod error;
mod mesos;
mod netconf;
mod request;
mod result;
mod version;

pub use env::{CniArgs, Command, ContainerId, IfName, RawEnv, MAX_IFNAME_LEN};
pub use error::{Error, ErrorReply};
pub use mesos::{sanitize_mesos_label, MesosNetworkInfo};
pub use netconf::{
    reply_version, EtcdConf, GcAttachment, IpamConf, LogLevel, NetConf, DEFAULT_ETCD_PREFIX,
    DEFAULT_ETCD_TIMEOUT, DEFAULT_MTU, MAX_MTU, MIN_MTU,
};
pub use request::{Invocation, Maintenance, Request};
pub use result::{CniResult, Dns, Interface, IpConfig, ResultParseError, Route, VersionReply};
pub use version::CniVersion;
