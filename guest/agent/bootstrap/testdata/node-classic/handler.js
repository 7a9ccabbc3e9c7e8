'use strict';
// A handler written to OpenFaaS's classic node template (our own test file).
module.exports = async (context, callback) => {
  return { classic: 'node', got: context };
};
