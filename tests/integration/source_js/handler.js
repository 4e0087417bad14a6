const { greeting } = require('./helpers');

console.log('module loaded');

module.exports = (event, context) => {
  console.log(`called with ${JSON.stringify(event)}`);
  const kind = event && typeof event === 'object' ? event.kind : undefined;
  if (kind === 'text') return greeting(event.name || 'world');
  if (kind === 'bytes') return Buffer.from('\x00\x01binary', 'latin1');
  if (kind === 'shape') return { statusCode: 201, headers: { 'X-Made': 'yes' }, body: { made: true } };
  if (kind === 'b64') return { statusCode: 200, body: Buffer.from('raw').toString('base64'), isBase64Encoded: true };
  if (kind === 'fail') throw new Error('asked to fail');
  if (kind === 'number') return 42;
  return {
    event,
    request_id: context.requestId,
    function: context.function,
    version: context.version,
    method: context.method,
    path: context.path,
    agent: context.headers['x-agent'],
    remaining: context.remainingMs() > 0,
  };
};
