// A function from source: faas new add-js --runtime node --code handlers/source/add.js
module.exports = (event, context) => {
  console.log(`adding for request ${context.requestId}`); // to the function's log
  return { sum: (event.a || 0) + (event.b || 0) };
};
