//! Fuzzes what the guest decodes from untrusted requests (R15): Connect
//! envelopes split at every byte, and every request message of the process
//! and filesystem services in both codecs. Any panic is a bug.
#![no_main]

use hutch_envd::{
    connect::{Codec, FrameDecoder},
    filesystem as fs, process as pr,
};
use libfuzzer_sys::fuzz_target;

fn decode_all(codec: Codec, bytes: &[u8]) {
    let _ = codec.decode::<pr::StartRequest>(bytes);
    let _ = codec.decode::<pr::ConnectRequest>(bytes);
    let _ = codec.decode::<pr::ListRequest>(bytes);
    let _ = codec.decode::<pr::SendInputRequest>(bytes);
    let _ = codec.decode::<pr::StreamInputRequest>(bytes);
    let _ = codec.decode::<pr::SendSignalRequest>(bytes);
    let _ = codec.decode::<pr::CloseStdinRequest>(bytes);
    let _ = codec.decode::<pr::UpdateRequest>(bytes);
    let _ = codec.decode::<fs::StatRequest>(bytes);
    let _ = codec.decode::<fs::MakeDirRequest>(bytes);
    let _ = codec.decode::<fs::MoveRequest>(bytes);
    let _ = codec.decode::<fs::ListDirRequest>(bytes);
    let _ = codec.decode::<fs::RemoveRequest>(bytes);
    let _ = codec.decode::<fs::WatchDirRequest>(bytes);
    let _ = codec.decode::<fs::CreateWatcherRequest>(bytes);
    let _ = codec.decode::<fs::GetWatcherEventsRequest>(bytes);
    let _ = codec.decode::<fs::RemoveWatcherRequest>(bytes);
}

fuzz_target!(|data: &[u8]| {
    decode_all(Codec::Json, data);
    decode_all(Codec::Proto, data);
    // The first byte chooses where the stream is split, as a network would.
    let split = data.first().map(|b| *b as usize).unwrap_or(0).min(data.len());
    let mut dec = FrameDecoder::new(1 << 16);
    for chunk in [&data[..split], &data[split..]] {
        dec.push(chunk);
        while let Ok(Some(frame)) = dec.next_frame() {
            if frame.is_end_stream() {
                let _ = frame.end_stream_error();
            } else {
                decode_all(Codec::Json, &frame.payload);
            }
        }
    }
});
