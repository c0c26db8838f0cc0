# A test-only addon, built on demand by test/native/helper.ts into test/native/helper/build.
# It is not part of the package (not in package.json "files", not in the root binding.gyp, so
# neither node-gyp-build nor prebuildify ever sees it): the production addon has no test hooks.
{
  "targets": [
    {
      "target_name": "mk_test_helper",
      "sources": ["helper.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-Wall", "-Wextra", "-std=gnu11"]
    }
  ]
}
