// Run against a local instance: RL_TARGET=localhost:50051 node example.js
import { Outcome, RateLimitClient, RateLimitError, Status } from './index.js';

const client = new RateLimitClient(process.env.RL_TARGET ?? 'localhost:50051');

/**
 * Stands in for the provider SDK call.
 * @param {string} model
 */
async function callProvider(model) {
  return { text: `answer from ${model}`, usage: { inputTokens: 1200, outputTokens: 300, cachedTokens: 0 } };
}

try {
  // The usual shape: the lease is released with the usage the callback returns.
  const { value, lease, released } = await client.withLease('summary', { timeoutMs: 30_000 }, async (lease) => {
    const reply = await callProvider(lease.modelId);
    return { usage: reply.usage, value: reply.text };
  });
  console.log(value, `on ${lease.modelId}, refunded ${released.refundedTokens} tokens`);

  // By hand, with an escalation order and a job id of your own (retries return the same lease).
  const manual = await client.acquire('summary', {
    models: ['xai/grok-4.1-fast', 'deepinfra/gpt-oss-20b'],
    jobId: 'report-42',
    timeoutMs: 10_000,
  });
  try {
    const reply = await callProvider(manual.modelId);
    console.log(await client.release(manual.leaseId, { outcome: Outcome.SUCCESS, usage: reply.usage }));
  } catch (err) {
    await client.release(manual.leaseId, { outcome: Outcome.FAILED_UNKNOWN_USAGE });
    throw err;
  }
} catch (err) {
  if (err instanceof RateLimitError && err.code === Status.RESOURCE_EXHAUSTED) {
    console.error('no capacity on any model, try later:', err.details);
  } else {
    throw err;
  }
} finally {
  client.close();
}
