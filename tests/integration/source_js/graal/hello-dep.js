// GraalFaaS's JavaScript example with a dependency (app/src/main/resources/functions/js/hello-dep.js).
const { greet } = require('greeter');
function handler(event) { return { message: greet(event.name) }; }
