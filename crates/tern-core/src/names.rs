//! Names and identities. Newtypes, so a queue name is never passed where an exchange name goes.

use std::fmt;
use std::ops::Deref;

use tern_amqp::ShortStr;

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub ShortStr);

        impl $name {
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }
        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                self.0.as_str()
            }
        }
        impl From<ShortStr> for $name {
            fn from(s: ShortStr) -> Self {
                $name(s)
            }
        }
        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(ShortStr::from(s))
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.as_str())
            }
        }
    };
}

name_type!(
    /// A virtual host's name, e.g. `/`.
    VhostName
);
name_type!(
    /// An exchange's name within a vhost; the default exchange is the empty name.
    ExchangeName
);
name_type!(
    /// A queue's name within a vhost.
    QueueName
);
name_type!(
    /// A user's name.
    UserName
);

/// One client connection, unique for the node's lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// One open channel, unique for the node's lifetime (not the AMQP channel number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelKey(pub u64);

/// One consumer on one queue, unique for the node's lifetime (not the consumer tag).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerId(pub u64);
