//! What operators see of a connection's channels and consumers (`/api/channels`,
//! `/api/consumers`): the connection task owns that state, so it answers a
//! `ConnEvent::Describe` with a copy instead of sharing it behind a lock.

use tern_amqp::FieldTable;
use tern_core::names::QueueName;

use super::Connection;

#[derive(Clone, Debug, Default)]
pub struct ConnDetail {
    pub channels: Vec<ChannelDetail>,
    pub consumers: Vec<ConsumerDetail>,
}

#[derive(Clone, Debug)]
pub struct ChannelDetail {
    pub number: u16,
    /// basic.qos prefetch for new consumers, and the channel-wide (global) one.
    pub prefetch_count: u16,
    pub global_prefetch_count: u32,
    pub confirm: bool,
    pub transactional: bool,
    pub consumer_count: usize,
    pub messages_unacknowledged: usize,
}

#[derive(Clone, Debug)]
pub struct ConsumerDetail {
    pub channel: u16,
    pub tag: String,
    pub queue: QueueName,
    pub ack_required: bool,
    pub exclusive: bool,
    pub prefetch_count: u16,
    pub arguments: FieldTable,
}

impl Connection {
    pub(super) fn describe(&self) -> ConnDetail {
        let mut channels: Vec<ChannelDetail> = self
            .channels
            .iter()
            .map(|(number, c)| ChannelDetail {
                number: *number,
                prefetch_count: c.consumer_prefetch,
                global_prefetch_count: c.channel_credit.as_ref().map_or(0, |cr| cr.limit()),
                confirm: c.confirm.is_some(),
                transactional: c.tx.is_some(),
                consumer_count: c.consumer_tags.len(),
                messages_unacknowledged: c.unacked.len(),
            })
            .collect();
        channels.sort_by_key(|c| c.number);
        let mut consumers: Vec<ConsumerDetail> = self
            .consumers
            .values()
            .filter_map(|info| {
                let channel = self.channels.get(&info.channel)?;
                let queue = channel.queues.get(info.queue_slot)?;
                Some(ConsumerDetail {
                    channel: info.channel,
                    tag: info.tag.to_string(),
                    queue: queue.name().clone(),
                    ack_required: !info.no_ack,
                    exclusive: info.exclusive,
                    prefetch_count: info.prefetch,
                    arguments: info.arguments.clone(),
                })
            })
            .collect();
        consumers.sort_by(|a, b| (a.channel, &a.tag).cmp(&(b.channel, &b.tag)));
        ConnDetail {
            channels,
            consumers,
        }
    }
}
