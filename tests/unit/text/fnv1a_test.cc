#include "text/fnv1a.h"

#include <gtest/gtest.h>

namespace wf {
namespace {

// The published FNV-1a 64-bit test vectors (www.isthe.com/chongo/tech/comp/fnv).
TEST(Fnv1a64Test, PublishedVectors) {
  EXPECT_EQ(Fnv1a64(""), 0xcbf29ce484222325ULL);
  EXPECT_EQ(Fnv1a64("a"), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(Fnv1a64("foobar"), 0x85944171f73967e8ULL);
}

TEST(Fnv1a64Test, BytesAboveSevenBitsAreUnsigned) {
  // A signed char would sign-extend 0xE4 into the XOR and give another value.
  EXPECT_EQ(Fnv1a64("\xE4"), (kFnv1a64Basis ^ 0xE4) * 1099511628211ULL);
  EXPECT_NE(Fnv1a64("\xE4\xB8\xAD"), Fnv1a64("\xE4\xB8\xAE"));
}

TEST(Fnv1a64Test, StartsFromTheGivenBasis) {
  EXPECT_EQ(kFnv1a64Basis, 0xcbf29ce484222325ULL);
  EXPECT_EQ(Fnv1a64("", 42), 42U);
  EXPECT_EQ(Fnv1a64("a", 42), (42 ^ 'a') * 1099511628211ULL);
}

}  // namespace
}  // namespace wf
