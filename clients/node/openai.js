// @ts-check
/**
 * Release reports from the answers of the `openai` npm package: the usage, the outcome and what
 * the provider's headers say about the key (retry-after, x-ratelimit-remaining-*), ready for
 * `client.release(leaseId, report)` or as what a `withLease` callback returns.
 *
 * Nothing here imports `openai`: it reads the shapes the SDK hands out (`withResponse()`'s
 * `{data, response}`, an `APIError`'s `status` and `headers`), so the rest of the client works
 * without the package installed. A malformed header or usage field is left out with a
 * `console.warn`; no function here throws.
 * @module rlclient/openai
 */
import { Outcome } from './index.js';

/**
 * @typedef {import('./index.js').Usage} Usage
 * @typedef {import('./index.js').ProviderFeedback} ProviderFeedback
 * @typedef {import('./index.js').ReleaseOptions} ReleaseOptions
 *
 * @typedef {{get(name: string): string | null | undefined} | Record<string, unknown>} HeadersLike
 *   A fetch `Headers` (the SDK's, v5 and later), or a plain object of them (v4).
 *
 * @typedef {object} ParseOptions
 * @property {number} [now] Epoch milliseconds an HTTP-date retry-after is measured from;
 *   default `Date.now()`.
 * @property {(message: string) => void} [warn] Where warnings go; default `console.warn`.
 */

/** @param {string} message */
const consoleWarn = (message) => console.warn(`rlclient: ${message}`);

/** A non-negative decimal number, as retry-after and retry-after-ms are sent. */
const DECIMAL = /^(\d+(\.\d+)?|\.\d+)$/;
/** A count, as the remaining headers are sent. */
const COUNT = /^\d+$/;
/** The three HTTP-date forms (RFC 9110 §5.6.7) all start with the day's name. */
const HTTP_DATE = /^(mon|tue|wed|thu|fri|sat|sun)[a-z]*,? /i;

/** Remaining headers of OpenAI's answers, by the ProviderFeedback field they fill. */
const REMAINING_HEADERS = /** @type {const} */ ([
  ['remainingTokens', 'x-ratelimit-remaining-tokens'],
  ['remainingRequests', 'x-ratelimit-remaining-requests'],
]);

/**
 * One header's value, whatever holds the headers; undefined when absent.
 * @param {HeadersLike | null | undefined} headers
 * @param {string} name Lower case.
 * @returns {string | undefined}
 */
export function headerValue(headers, name) {
  if (!headers || typeof headers !== 'object') {
    return undefined;
  }
  if (typeof headers.get === 'function') {
    const value = /** @type {{get(name: string): unknown}} */ (headers).get(name);
    return value === null || value === undefined ? undefined : String(value);
  }
  for (const [key, value] of Object.entries(headers)) {
    if (key.toLowerCase() === name && value !== null && value !== undefined) {
      return Array.isArray(value) ? value.join(', ') : String(value);
    }
  }
  return undefined;
}

/**
 * A header matching `pattern`, times `scale`, rounded up, as a safe integer; undefined (and a
 * warning) when it is anything else.
 * @param {string} name
 * @param {string} raw
 * @param {RegExp} pattern
 * @param {(message: string) => void} warn
 * @param {number} [scale]
 */
function numericHeader(name, raw, pattern, warn, scale = 1) {
  const text = raw.trim();
  // toPrecision drops the binary noise of the scaling (0.1 s is 100 ms, not 101).
  const value = pattern.test(text) ? Math.ceil(Number((Number(text) * scale).toPrecision(15))) : NaN;
  if (!Number.isSafeInteger(value)) {
    warn(`ignored the malformed ${name} header ${JSON.stringify(raw)}`);
    return undefined;
  }
  return value;
}

/**
 * How long the provider asks callers to wait, in milliseconds: `retry-after-ms` when it is valid,
 * else `retry-after` in seconds (fractions rounded up) or as an HTTP-date (0 when it has passed).
 * Undefined when neither header is there or valid.
 * @param {HeadersLike | null | undefined} headers
 * @param {ParseOptions} [options]
 * @returns {number | undefined}
 */
export function parseRetryAfter(headers, options = {}) {
  const warn = options.warn ?? consoleWarn;
  try {
    const ms = headerValue(headers, 'retry-after-ms');
    if (ms !== undefined) {
      const parsed = numericHeader('retry-after-ms', ms, DECIMAL, warn);
      if (parsed !== undefined) {
        return parsed;
      }
    }
    const raw = headerValue(headers, 'retry-after');
    if (raw === undefined) {
      return undefined;
    }
    const text = raw.trim();
    if (HTTP_DATE.test(text)) {
      // asctime's form names no zone; HTTP-dates are all GMT.
      const at = Date.parse(/GMT$/i.test(text) ? text : `${text} GMT`);
      if (Number.isFinite(at)) {
        return Math.max(0, Math.ceil(at - (options.now ?? Date.now())));
      }
    }
    return numericHeader('retry-after', raw, DECIMAL, warn, 1000);
  } catch (err) {
    warn(`could not read retry-after: ${err}`);
    return undefined;
  }
}

/**
 * What the provider's headers say about the key: `retryAfterMs` (see {@link parseRetryAfter}),
 * `remainingTokens` from x-ratelimit-remaining-tokens and `remainingRequests` from
 * x-ratelimit-remaining-requests (non-negative integers). Absent or malformed headers are left
 * out; an answer without any gives `{}`.
 * @param {HeadersLike | null | undefined} headers
 * @param {ParseOptions} [options]
 * @returns {ProviderFeedback}
 */
export function providerFeedback(headers, options = {}) {
  const warn = options.warn ?? consoleWarn;
  /** @type {ProviderFeedback} */
  const feedback = {};
  const retryAfterMs = parseRetryAfter(headers, { ...options, warn });
  if (retryAfterMs !== undefined) {
    feedback.retryAfterMs = retryAfterMs;
  }
  for (const [field, name] of REMAINING_HEADERS) {
    try {
      const raw = headerValue(headers, name);
      const value = raw === undefined ? undefined : numericHeader(name, raw, COUNT, warn);
      if (value !== undefined) {
        feedback[field] = value;
      }
    } catch (err) {
      warn(`could not read ${name}: ${err}`);
    }
  }
  return feedback;
}

/**
 * A token count from the SDK's usage: a non-negative safe integer, else undefined with a warning.
 * @param {unknown} value
 * @param {string} name
 * @param {(message: string) => void} warn
 */
function tokenCount(value, name, warn) {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) {
    return value;
  }
  warn(`ignored the malformed usage field ${name}: ${JSON.stringify(value)}`);
  return undefined;
}

/**
 * The Usage of a release from the SDK's `usage`: Chat Completions
 * (`prompt_tokens`, `completion_tokens`, `prompt_tokens_details.cached_tokens`) or Responses
 * (`input_tokens`, `output_tokens`, `input_tokens_details.cached_tokens`). OpenAI counts cached
 * tokens inside the prompt, so input = prompt − cached; output includes reasoning tokens.
 * Undefined (with a warning) when the prompt or completion count is missing or malformed.
 * @param {unknown} usage
 * @param {Pick<ParseOptions, 'warn'>} [options]
 * @returns {Usage | undefined}
 */
export function usageFromOpenAI(usage, options = {}) {
  const warn = options.warn ?? consoleWarn;
  try {
    if (!usage || typeof usage !== 'object') {
      warn('the answer carries no usage: released as FAILED_UNKNOWN_USAGE');
      return undefined;
    }
    const u = /** @type {Record<string, any>} */ (usage);
    const chat = 'prompt_tokens' in u || 'completion_tokens' in u;
    const [promptName, outputName, detailsName] = chat
      ? ['prompt_tokens', 'completion_tokens', 'prompt_tokens_details']
      : ['input_tokens', 'output_tokens', 'input_tokens_details'];
    const prompt = tokenCount(u[promptName], promptName, warn);
    const output = tokenCount(u[outputName], outputName, warn);
    if (prompt === undefined || output === undefined) {
      return undefined;
    }
    const rawCached = u[detailsName]?.cached_tokens;
    let cached = rawCached === undefined || rawCached === null
      ? 0
      : (tokenCount(rawCached, `${detailsName}.cached_tokens`, warn) ?? 0);
    if (cached > prompt) {
      warn(`${detailsName}.cached_tokens ${cached} exceeds ${promptName} ${prompt}: counted as ${prompt}`);
      cached = prompt;
    }
    return { requestCount: 1, inputTokens: prompt - cached, cachedTokens: cached, outputTokens: output };
  } catch (err) {
    warn(`could not read the usage: ${err}`);
    return undefined;
  }
}

/**
 * The release for an answer: `{data, response}` of the SDK's `.withResponse()` (for a stream,
 * pass `{data: {usage: lastChunk.usage}, response}`). SUCCESS with the usage and the headers'
 * feedback; FAILED_UNKNOWN_USAGE (still with the feedback) when the answer has no usable usage.
 * @param {{data?: unknown, response?: {headers?: HeadersLike} | null} | null | undefined} result
 * @param {ParseOptions} [options]
 * @returns {ReleaseOptions}
 */
export function releaseFromResponse(result, options = {}) {
  const warn = options.warn ?? consoleWarn;
  try {
    const data = /** @type {{usage?: unknown} | undefined} */ (result?.data);
    const usage = usageFromOpenAI(data?.usage, { warn });
    const provider = providerFeedback(result?.response?.headers, { ...options, warn });
    return usage
      ? { outcome: Outcome.SUCCESS, usage, provider }
      : { outcome: Outcome.FAILED_UNKNOWN_USAGE, provider };
  } catch (err) {
    warn(`could not read the answer: ${err}`);
    return { outcome: Outcome.FAILED_UNKNOWN_USAGE };
  }
}

/**
 * The release for an error the SDK threw (an `APIError`: `status`, `headers`):
 *
 * - 429 (`RateLimitError`) → RATE_LIMITED, no usage (nothing is charged), with the headers'
 *   feedback: retry-after pauses the model on every instance.
 * - other 4xx → FAILED_WITH_USAGE of one request and no tokens (the provider refused the
 *   request before generating anything), with the headers' feedback.
 * - 5xx → FAILED_UNKNOWN_USAGE (the provider may have done the work), with the headers' feedback.
 * - anything without an HTTP status (connection errors, timeouts, aborts, errors not from the
 *   SDK) → undefined: `withLease` then applies its own rule, and `client.release(id, undefined)`
 *   releases as FAILED_UNKNOWN_USAGE.
 * @param {unknown} err
 * @param {ParseOptions} [options]
 * @returns {ReleaseOptions | undefined}
 */
export function releaseFromError(err, options = {}) {
  const warn = options.warn ?? consoleWarn;
  try {
    const e = /** @type {{status?: unknown, headers?: HeadersLike} | null | undefined} */ (err);
    const status = e && typeof e === 'object' ? e.status : undefined;
    if (typeof status !== 'number' || !Number.isInteger(status) || status < 400 || status > 599) {
      return undefined;
    }
    const provider = providerFeedback(e?.headers, { ...options, warn });
    if (status === 429) {
      return { outcome: Outcome.RATE_LIMITED, provider };
    }
    if (status < 500) {
      return {
        outcome: Outcome.FAILED_WITH_USAGE,
        usage: { requestCount: 1, inputTokens: 0, outputTokens: 0, cachedTokens: 0 },
        provider,
      };
    }
    return { outcome: Outcome.FAILED_UNKNOWN_USAGE, provider };
  } catch (readErr) {
    warn(`could not read the error: ${readErr}`);
    return { outcome: Outcome.FAILED_UNKNOWN_USAGE };
  }
}
