// A script body: the whole file runs per request, with event and context in scope.
return { double: event.n * 2 };
