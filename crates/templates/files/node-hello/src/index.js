// A Strata function: an async handler(event, context) returns any JSON value.
exports.handler = async (event, context) => {
  const name = (event && event.name) || 'world';
  return {
    message: `Hello, ${name}!`,
    function: context.functionName,
    requestId: context.awsRequestId,
  };
};
