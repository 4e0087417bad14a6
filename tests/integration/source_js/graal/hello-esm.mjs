// GraalFaaS's ES module example (app/src/main/resources/functions/js/hello-esm.mjs).
export function handler(event) {
  return { message: `Hello, ${event.name}!` };
}
