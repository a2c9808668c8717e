// The openai adapter's parsing, alone: no service, no provider, no network.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import OpenAI from 'openai';
import { Outcome, RateLimitClient, providerModel } from '../index.js';
import {
  headerValue,
  parseRetryAfter,
  providerFeedback,
  releaseFromError,
  releaseFromResponse,
  usageFromOpenAI,
} from '../openai.js';

/** A warn option that keeps what it was told. */
function collector() {
  /** @type {string[]} */
  const messages = [];
  return { messages, warn: (/** @type {string} */ m) => messages.push(m) };
}

const NOW = Date.parse('2026-03-01T12:00:00Z');

describe('openai adapter: headers', () => {
  test('headerValue reads fetch Headers, plain objects of any case and Maps', () => {
    assert.equal(headerValue(new Headers({ 'Retry-After': '3' }), 'retry-after'), '3');
    assert.equal(headerValue({ 'Retry-After': '3' }, 'retry-after'), '3');
    assert.equal(headerValue({ 'retry-after': 3 }, 'retry-after'), '3');
    assert.equal(headerValue(new Map([['retry-after', '3']]), 'retry-after'), '3');
    assert.equal(headerValue(new Headers(), 'retry-after'), undefined);
    assert.equal(headerValue({ 'retry-after': null }, 'retry-after'), undefined);
    assert.equal(headerValue(undefined, 'retry-after'), undefined);
    assert.equal(headerValue(null, 'retry-after'), undefined);
  });

  test('retry-after in seconds, fractions rounded up to the millisecond', () => {
    const { messages, warn } = collector();
    const ms = (/** @type {string} */ v) => parseRetryAfter(new Headers({ 'retry-after': v }), { warn });
    assert.equal(ms('2'), 2000);
    assert.equal(ms('0'), 0);
    assert.equal(ms(' 7 '), 7000);
    assert.equal(ms('1.5'), 1500);
    assert.equal(ms('0.1'), 100);
    assert.equal(ms('0.0001'), 1);
    assert.equal(ms('.5'), 500);
    assert.deepEqual(messages, []);
  });

  test('retry-after as an HTTP-date: the time until then, 0 once it has passed', () => {
    const { messages, warn } = collector();
    const at = (/** @type {string} */ v) => parseRetryAfter({ 'retry-after': v }, { now: NOW, warn });
    assert.equal(at('Sun, 01 Mar 2026 12:00:30 GMT'), 30_000);
    assert.equal(at('Sunday, 01-Mar-26 12:00:05 GMT'), 5_000);
    assert.equal(at('Sun Mar  1 12:01:00 2026'), 60_000);
    assert.equal(at('Sun, 01 Mar 2026 11:00:00 GMT'), 0);
    assert.deepEqual(messages, []);
  });

  test('retry-after-ms wins over retry-after; a malformed one falls back to retry-after', () => {
    const { messages, warn } = collector();
    assert.equal(parseRetryAfter(new Headers({ 'retry-after-ms': '250', 'retry-after': '1' }), { warn }), 250);
    assert.equal(parseRetryAfter(new Headers({ 'retry-after-ms': '12.2' }), { warn }), 13);
    assert.deepEqual(messages, []);
    assert.equal(parseRetryAfter(new Headers({ 'retry-after-ms': 'soon', 'retry-after': '1' }), { warn }), 1000);
    assert.equal(messages.length, 1);
    assert.match(messages[0], /retry-after-ms.*"soon"/);
  });

  test('a malformed retry-after is ignored with a warning, never thrown', () => {
    for (const bad of ['soon', '-5', '-0.5', '1e3', '', '12, 13', '0x10', 'Infinity', 'NaN', '9'.repeat(20),
      'Sun, 99 Foo 2026 99:99:99 GMT', '  ']) {
      const { messages, warn } = collector();
      assert.equal(parseRetryAfter(new Headers({ 'retry-after': bad }), { warn }), undefined, bad);
      assert.equal(messages.length, 1, `one warning for ${JSON.stringify(bad)}`);
      assert.match(messages[0], /retry-after/);
    }
  });

  test('no retry-after header is no value and no warning', () => {
    const { messages, warn } = collector();
    assert.equal(parseRetryAfter(new Headers({ 'x-ratelimit-remaining-tokens': '5' }), { warn }), undefined);
    assert.equal(parseRetryAfter(undefined, { warn }), undefined);
    assert.deepEqual(messages, []);
  });

  test("providerFeedback maps OpenAI's headers and leaves the rest out", () => {
    const { messages, warn } = collector();
    const headers = new Headers({
      'retry-after': '3',
      'x-ratelimit-limit-requests': '500',
      'x-ratelimit-limit-tokens': '30000',
      'x-ratelimit-remaining-requests': '499',
      'x-ratelimit-remaining-tokens': '29100',
      'x-ratelimit-reset-requests': '120ms',
      'x-ratelimit-reset-tokens': '1m30.5s',
    });
    assert.deepEqual(providerFeedback(headers, { warn }), {
      retryAfterMs: 3000,
      remainingRequests: 499,
      remainingTokens: 29100,
    });
    assert.deepEqual(providerFeedback(new Headers(), { warn }), {});
    assert.deepEqual(providerFeedback(undefined, { warn }), {});
    assert.deepEqual(messages, []);
  });

  test('malformed remaining headers are ignored with a warning; the good ones are kept', () => {
    const { messages, warn } = collector();
    const headers = { 'x-ratelimit-remaining-tokens': '-20', 'x-ratelimit-remaining-requests': '7' };
    assert.deepEqual(providerFeedback(headers, { warn }), { remainingRequests: 7 });
    assert.equal(messages.length, 1);
    assert.match(messages[0], /x-ratelimit-remaining-tokens.*"-20"/);
    for (const bad of ['10.9', 'many', '', '1e3', '99999999999999999999']) {
      assert.deepEqual(providerFeedback({ 'x-ratelimit-remaining-tokens': bad }, { warn }), {}, bad);
    }
    assert.equal(messages.length, 6);
  });

  test('whatever the headers say, no value is negative or anything but a safe integer', () => {
    const values = ['-1', '-0', '0', '1', '3.7', '-3.7', 'abc', '', '1e9', '12ms', '99999999999999999999',
      'Thu, 01 Jan 1970 00:00:00 GMT', 'Sun, 01 Mar 2026 12:00:30 GMT'];
    const { warn } = collector();
    for (const value of values) {
      const feedback = providerFeedback(new Headers({
        'retry-after-ms': value,
        'retry-after': value,
        'x-ratelimit-remaining-tokens': value,
        'x-ratelimit-remaining-requests': value,
      }), { now: NOW, warn });
      for (const [field, v] of Object.entries(feedback)) {
        assert.ok(Number.isSafeInteger(v) && v >= 0, `${field} = ${v} from ${JSON.stringify(value)}`);
      }
    }
  });

  test('headers that throw when read give a warning, not an exception', () => {
    const { messages, warn } = collector();
    const hostile = { get() { throw new Error('boom'); } };
    assert.deepEqual(providerFeedback(hostile, { warn }), {});
    assert.ok(messages.length >= 1);
    assert.ok(messages.every((m) => /boom/.test(m)));
    assert.deepEqual(releaseFromError({ status: 429, headers: hostile }, { warn }), {
      outcome: Outcome.RATE_LIMITED,
      provider: {},
    });
  });

  test('warnings go to console.warn by default', (t) => {
    const spy = t.mock.method(console, 'warn', () => {});
    assert.deepEqual(providerFeedback(new Headers({ 'retry-after': 'later' })), {});
    assert.equal(spy.mock.callCount(), 1);
    assert.match(String(spy.mock.calls[0].arguments[0]), /^rlclient: .*retry-after.*"later"/);
  });
});

describe('openai adapter: usage and outcomes', () => {
  test('Chat Completions usage: input is the prompt less its cached tokens', () => {
    const usage = {
      prompt_tokens: 1200,
      completion_tokens: 300,
      total_tokens: 1500,
      prompt_tokens_details: { cached_tokens: 1024, audio_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 128 },
    };
    assert.deepEqual(usageFromOpenAI(usage), { requestCount: 1, inputTokens: 176, cachedTokens: 1024, outputTokens: 300 });
    assert.deepEqual(usageFromOpenAI({ prompt_tokens: 9, completion_tokens: 2 }), {
      requestCount: 1, inputTokens: 9, cachedTokens: 0, outputTokens: 2,
    });
    assert.deepEqual(usageFromOpenAI({ prompt_tokens: 9, completion_tokens: 2, prompt_tokens_details: null }), {
      requestCount: 1, inputTokens: 9, cachedTokens: 0, outputTokens: 2,
    });
  });

  test('Responses usage is read the same way', () => {
    const usage = { input_tokens: 50, output_tokens: 20, input_tokens_details: { cached_tokens: 10 } };
    assert.deepEqual(usageFromOpenAI(usage), { requestCount: 1, inputTokens: 40, cachedTokens: 10, outputTokens: 20 });
  });

  test('malformed usage: unknown when the main counts are bad, cached kept within the prompt', () => {
    const { messages, warn } = collector();
    assert.equal(usageFromOpenAI({ prompt_tokens: -1, completion_tokens: 2 }, { warn }), undefined);
    assert.equal(usageFromOpenAI({ prompt_tokens: '10', completion_tokens: 2 }, { warn }), undefined);
    assert.equal(usageFromOpenAI({ prompt_tokens: 10 }, { warn }), undefined);
    assert.equal(usageFromOpenAI(undefined, { warn }), undefined);
    assert.deepEqual(usageFromOpenAI({ prompt_tokens: 10, completion_tokens: 2, prompt_tokens_details: { cached_tokens: 50 } }, { warn }),
      { requestCount: 1, inputTokens: 0, cachedTokens: 10, outputTokens: 2 });
    assert.deepEqual(usageFromOpenAI({ prompt_tokens: 10, completion_tokens: 2, prompt_tokens_details: { cached_tokens: -4 } }, { warn }),
      { requestCount: 1, inputTokens: 10, cachedTokens: 0, outputTokens: 2 });
    assert.equal(messages.length, 6);
  });

  test('releaseFromResponse: SUCCESS with the usage and the headers; no usage is unknown usage', () => {
    const { messages, warn } = collector();
    const response = new Response('{}', { headers: { 'x-ratelimit-remaining-tokens': '900', 'x-ratelimit-remaining-requests': '4' } });
    const data = { usage: { prompt_tokens: 30, completion_tokens: 5, prompt_tokens_details: { cached_tokens: 10 } } };
    assert.deepEqual(releaseFromResponse({ data, response }, { warn }), {
      outcome: Outcome.SUCCESS,
      usage: { requestCount: 1, inputTokens: 20, cachedTokens: 10, outputTokens: 5 },
      provider: { remainingTokens: 900, remainingRequests: 4 },
    });
    assert.deepEqual(messages, []);
    assert.deepEqual(releaseFromResponse({ data: {}, response }, { warn }), {
      outcome: Outcome.FAILED_UNKNOWN_USAGE,
      provider: { remainingTokens: 900, remainingRequests: 4 },
    });
    assert.equal(messages.length, 1);
    assert.deepEqual(releaseFromResponse(undefined, { warn }), { outcome: Outcome.FAILED_UNKNOWN_USAGE, provider: {} });
  });

  test("releaseFromError maps the SDK's errors by status", () => {
    const { messages, warn } = collector();
    const headers = new Headers({ 'retry-after': '2', 'x-ratelimit-remaining-tokens': '0', 'x-ratelimit-remaining-requests': '3' });
    const limited = OpenAI.APIError.generate(429, { error: { message: 'slow down' } }, undefined, headers);
    assert.ok(limited instanceof OpenAI.RateLimitError);
    assert.deepEqual(releaseFromError(limited, { warn }), {
      outcome: Outcome.RATE_LIMITED,
      provider: { retryAfterMs: 2000, remainingTokens: 0, remainingRequests: 3 },
    });
    const refused = OpenAI.APIError.generate(400, { error: { message: 'bad' } }, undefined, new Headers());
    assert.deepEqual(releaseFromError(refused, { warn }), {
      outcome: Outcome.FAILED_WITH_USAGE,
      usage: { requestCount: 1, inputTokens: 0, outputTokens: 0, cachedTokens: 0 },
      provider: {},
    });
    const broken = OpenAI.APIError.generate(503, undefined, 'down', new Headers({ 'retry-after': '1' }));
    assert.deepEqual(releaseFromError(broken, { warn }), { outcome: Outcome.FAILED_UNKNOWN_USAGE, provider: { retryAfterMs: 1000 } });
    assert.equal(releaseFromError(new OpenAI.APIConnectionError({ message: 'refused' }), { warn }), undefined);
    assert.equal(releaseFromError(new OpenAI.APIConnectionTimeoutError(), { warn }), undefined);
    assert.equal(releaseFromError(new Error('mine'), { warn }), undefined);
    assert.equal(releaseFromError(undefined, { warn }), undefined);
    assert.deepEqual(messages, []);
  });

  test("providerModel drops the service's provider prefix", () => {
    assert.equal(providerModel('openai/gpt-5.2'), 'gpt-5.2');
    assert.equal(providerModel('deepinfra/openai/gpt-oss-20b'), 'openai/gpt-oss-20b');
    assert.equal(providerModel('gpt-4o'), 'gpt-4o');
    assert.equal(providerModel('openai/'), 'openai/');
  });

  test('release refuses negative or fractional feedback before sending anything', async () => {
    // Nothing listens there: a request that got as far as the network would fail otherwise.
    const client = new RateLimitClient('127.0.0.1:9', { retry: { maxAttempts: 1 } });
    try {
      for (const provider of [{ retryAfterMs: -1 }, { remainingTokens: -5 }, { remainingRequests: 1.5 }]) {
        await assert.rejects(client.release('lease', { outcome: Outcome.RATE_LIMITED, provider }), TypeError);
      }
      await assert.rejects(client.release('lease', { outcome: Outcome.SUCCESS }), TypeError);
    } finally {
      client.close();
    }
  });
});
