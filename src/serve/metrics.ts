// The server's counters and latency histograms, written in Prometheus' text exposition format for
// GET /metrics (requests by route and status, tokens in and out, queue length, TTFT and inter-token latency).

/** Upper bounds (seconds) of the latency buckets: from a fraction of a millisecond to a minute. */
const BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

class Histogram {
  private readonly counts = new Array<number>(BUCKETS.length).fill(0);
  private sum = 0;
  private count = 0;

  observe(seconds: number): void {
    for (let i = 0; i < BUCKETS.length; i++) if (seconds <= BUCKETS[i]!) this.counts[i]!++;
    this.sum += seconds;
    this.count++;
  }

  lines(name: string): string[] {
    return [
      ...BUCKETS.map((b, i) => `${name}_bucket{le="${b}"} ${this.counts[i]}`),
      `${name}_bucket{le="+Inf"} ${this.count}`,
      `${name}_sum ${this.sum}`,
      `${name}_count ${this.count}`,
    ];
  }
}

/** Everything GET /metrics reports; the server updates it as requests come and go. */
export class Metrics {
  private readonly requests = new Map<string, number>();
  promptTokens = 0;
  generatedTokens = 0;
  readonly timeToFirstToken = new Histogram();
  readonly interTokenLatency = new Histogram();

  /** Counts one answered request. */
  request(route: string, status: number): void {
    const key = `route="${route}",status="${status}"`;
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1);
  }

  /** The exposition text; `gauges` are read at scrape time (queue length, requests in flight). */
  render(gauges: { waiting: number; inFlight: number; slots: number }): string {
    const out: string[] = [
      '# HELP llmopt_requests_total HTTP requests answered, by route and status.',
      '# TYPE llmopt_requests_total counter',
      ...[...this.requests].map(([k, v]) => `llmopt_requests_total{${k}} ${v}`),
      '# HELP llmopt_prompt_tokens_total Prompt tokens of generation requests.',
      '# TYPE llmopt_prompt_tokens_total counter',
      `llmopt_prompt_tokens_total ${this.promptTokens}`,
      '# HELP llmopt_generated_tokens_total Tokens generated.',
      '# TYPE llmopt_generated_tokens_total counter',
      `llmopt_generated_tokens_total ${this.generatedTokens}`,
      '# HELP llmopt_queue_length Requests waiting for a decode slot.',
      '# TYPE llmopt_queue_length gauge',
      `llmopt_queue_length ${gauges.waiting}`,
      '# HELP llmopt_requests_in_flight Generation requests waiting or decoding.',
      '# TYPE llmopt_requests_in_flight gauge',
      `llmopt_requests_in_flight ${gauges.inFlight}`,
      '# HELP llmopt_slots Decode slots of the continuous batch.',
      '# TYPE llmopt_slots gauge',
      `llmopt_slots ${gauges.slots}`,
      '# HELP llmopt_time_to_first_token_seconds From a request arriving to its first token.',
      '# TYPE llmopt_time_to_first_token_seconds histogram',
      ...this.timeToFirstToken.lines('llmopt_time_to_first_token_seconds'),
      '# HELP llmopt_inter_token_latency_seconds Between consecutive tokens of one request.',
      '# TYPE llmopt_inter_token_latency_seconds histogram',
      ...this.interTokenLatency.lines('llmopt_inter_token_latency_seconds'),
    ];
    return `${out.join('\n')}\n`;
  }
}
