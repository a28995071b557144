// One call of the openai Node SDK against the site, for tests/live/test_openai_node_sdk.py.
// Usage: node call.mjs KIND [JSON ARGS], with SITE_V1 and SITE_KEY in the environment.
// Prints one line of JSON: {"ok": ...} with what came back, or {"error": ...} with the SDK's error classes.
import OpenAI from "openai";

const [kind, rawArgs] = process.argv.slice(2);
const args = JSON.parse(rawArgs ?? "{}");
const client = new OpenAI({
  baseURL: process.env.SITE_V1,
  apiKey: process.env.SITE_KEY,
  maxRetries: Number(process.env.MAX_RETRIES ?? 0),
  timeout: 15000,
});

const calls = {
  async chat() {
    const completion = await client.chat.completions.create(args);
    return { text: completion.choices[0].message.content, usage: completion.usage };
  },
  async stream() {
    const stream = await client.chat.completions.create({ ...args, stream: true });
    const pieces = [];
    for await (const chunk of stream) pieces.push(chunk.choices[0]?.delta?.content ?? "");
    return { pieces: pieces.filter(Boolean) };
  },
  async models() {
    const ids = [];
    for await (const model of client.models.list()) ids.push(model.id);
    return { ids };
  },
  async retrieve() {
    return await client.models.retrieve(args.id);
  },
  async responses() {
    const response = await client.responses.create(args);
    return { text: response.output_text, status: response.status, usage: response.usage };
  },
  async responsesStream() {
    const stream = await client.responses.create({ ...args, stream: true });
    const types = [];
    const deltas = [];
    for await (const event of stream) {
      types.push(event.type);
      if (event.type === "response.output_text.delta") deltas.push(event.delta);
    }
    return { types, deltas };
  },
  async embeddings() {
    const result = await client.embeddings.create(args);
    return { lengths: result.data.map((item) => item.embedding.length), usage: result.usage };
  },
};

const errorClasses = [
  "AuthenticationError", "BadRequestError", "NotFoundError", "RateLimitError", "InternalServerError",
  "PermissionDeniedError", "APIConnectionError",
];

try {
  console.log(JSON.stringify({ ok: await calls[kind]() }));
} catch (error) {
  if (!(error instanceof OpenAI.APIError)) throw error;
  console.log(JSON.stringify({
    error: {
      classes: errorClasses.filter((name) => error instanceof OpenAI[name]),
      status: error.status ?? null,
      code: error.code ?? null,
      param: error.param ?? null,
      message: error.error?.message ?? null,
      retryAfter: error.headers?.get("retry-after") ?? null,
    },
  }));
}
