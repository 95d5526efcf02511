//! Micro-benchmarks of the research hot path: validation, the rewrite into a
//! chat completion, the mapping of the answer, and the choice of an upstream.

#[path = "../tests/common/mod.rs"]
mod common;

use common::warm_pool;
use context7_lb::config::Strategy;
use context7_lb::metrics::Metrics;
use context7_lb::routes::research::{ResearchRequest, parse_chat_completion};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

const BODY: &[u8] =
    br#"{"query":"Explain the benefits of vLLM for large language model inference","max_tokens":2000,"temperature":0.7}"#;

const ANSWER: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"message":{"role":"assistant","content":"vLLM batches requests continuously and pages the KV cache so throughput stays high while latency stays low."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":20,"total_tokens":32}}"#;

fn research(c: &mut Criterion) {
    c.bench_function("research/validate", |b| {
        b.iter(|| ResearchRequest::parse(black_box(BODY)).expect("valid"))
    });
    let request = ResearchRequest::parse(BODY).expect("valid");
    c.bench_function("research/rewrite", |b| {
        b.iter(|| black_box(&request).chat_body("meta-llama/Llama-3.1-8B-Instruct", None))
    });
    c.bench_function("research/map_answer", |b| {
        b.iter(|| parse_chat_completion(black_box(ANSWER)).expect("valid"))
    });
}

fn selection(c: &mut Criterion) {
    for n in [2, 8, 64] {
        for (label, strategy) in [
            ("round_robin", Strategy::RoundRobin),
            ("peak_ewma", Strategy::PeakEwma),
        ] {
            let pool = warm_pool(n, strategy);
            c.bench_function(&format!("select/{label}/{n}"), |b| {
                b.iter(|| pool.select(black_box(&[])).expect("healthy"))
            });
        }
    }
}

fn metrics(c: &mut Criterion) {
    let metrics = Metrics::new();
    c.bench_function("metrics/record_request", |b| {
        b.iter(|| {
            metrics
                .requests
                .with_label_values(&[black_box("/v1/research"), "200"])
                .inc();
            metrics
                .request_duration
                .with_label_values(&["/v1/research"])
                .observe(black_box(0.012));
            metrics
                .gateway_overhead
                .with_label_values(&["/v1/research"])
                .observe(black_box(0.0001));
        })
    });
    c.bench_function("metrics/render", |b| b.iter(|| metrics.render()));
}

fn openai(c: &mut Criterion) {
    let body = bytes::Bytes::from_static(
        br#"{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"system","content":"You are a careful research assistant."},{"role":"user","content":"What is vLLM?"}],"max_tokens":256,"temperature":0.2,"stream":true}"#,
    );
    c.bench_function("openai/parse_request", |b| {
        b.iter(|| {
            context7_lb::routes::openai::ParsedRequest::parse(
                black_box(body.clone()),
                context7_lb::routes::openai::Endpoint::ChatCompletions,
            )
            .is_ok()
        })
    });
    let stream: Vec<u8> = (0..64)
        .map(|i| format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\" token{i}\"}}}}]}}\n\n"))
        .chain(std::iter::once("data: [DONE]\n\n".to_string()))
        .collect::<String>()
        .into_bytes();
    c.bench_function("sse/watch_64_events", |b| {
        b.iter(|| {
            let mut w = context7_lb::sse::SseWatcher::new();
            for chunk in stream.chunks(97) {
                w.feed(black_box(chunk));
            }
            w.done()
        })
    });
}

criterion_group!(benches, research, selection, metrics, openai);
criterion_main!(benches);
