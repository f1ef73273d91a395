// HeldLlmClient: calls start at once, what they bring waits for Release (then in order) or is
// dropped by Discard (and the calls cancelled).
#include "llm/held_llm_client.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "fakes.h"

namespace wf {
namespace {

using testing::FakeLlm;

/// Callbacks that write what they get into `log`.
ChatCallbacks Recording(std::vector<std::string>& log, const std::string& tag) {
  ChatCallbacks callbacks;
  callbacks.on_token = [&log, tag](std::string_view token) {
    log.push_back(tag + " token " + std::string(token));
  };
  callbacks.on_done = [&log, tag](Result<ChatOutcome> outcome) {
    log.push_back(tag + (outcome.ok() ? " done " + outcome->content : " failed"));
  };
  return callbacks;
}

TEST(HeldLlmClientTest, TheCallStartsAtOnceButWhatItBringsWaitsForRelease) {
  FakeLlm inner;
  HeldLlmClient held(inner);
  std::vector<std::string> log;
  ChatRequestOptions options;
  options.request_id = "r1";
  const ChatHandle handle = held.StartChat(options, Recording(log, "first"));
  ASSERT_EQ(inner.size(), 1u);  // on its way already
  EXPECT_EQ(handle, inner.last()->handle);
  EXPECT_EQ(inner.last()->options.request_id, "r1");

  inner.Tokens(0, {"a", "b"});
  inner.Answer(0, "ab");
  EXPECT_TRUE(log.empty());

  held.Release();
  EXPECT_EQ(log, (std::vector<std::string>{"first token a", "first token b", "first token ab",
                                           "first done ab"}));
  // Released: later callbacks and calls go straight through.
  held.StartChat({}, Recording(log, "second"));
  inner.Answer(1, "c");
  EXPECT_EQ(log.back(), "second done c");
  EXPECT_TRUE(inner.cancels().empty());
}

TEST(HeldLlmClientTest, WhatComesWhileTheHeldAreHandedOverWaitsItsTurn) {
  FakeLlm inner;
  HeldLlmClient held(inner);
  std::vector<std::string> log;
  ChatCallbacks callbacks = Recording(log, "call");
  bool more_sent = false;
  auto record = callbacks.on_token;
  callbacks.on_token = [&](std::string_view token) {
    record(token);
    // Another token arrives (on the I/O thread) while the held ones are being handed over.
    if (!more_sent) {
      more_sent = true;
      inner.Tokens(0, {"late"});
    }
  };
  held.StartChat({}, std::move(callbacks));
  inner.Tokens(0, {"a", "b"});
  held.Release();
  EXPECT_EQ(log, (std::vector<std::string>{"call token a", "call token b", "call token late"}));
}

TEST(HeldLlmClientTest, DiscardCancelsTheCallsAndDropsWhatTheyBring) {
  FakeLlm inner;
  HeldLlmClient held(inner);
  std::vector<std::string> log;
  const ChatHandle one = held.StartChat({}, Recording(log, "one"));
  const ChatHandle two = held.StartChat({}, Recording(log, "two"));
  inner.Tokens(0, {"a"});
  EXPECT_TRUE(held.Discard());
  EXPECT_EQ(inner.cancels(), (std::vector<ChatHandle>{one, two}));
  inner.Answer(0, "late");
  inner.Answer(1, "late");
  EXPECT_TRUE(log.empty());
  // Nothing starts any more, and neither Release nor another Discard changes that.
  EXPECT_EQ(held.StartChat({}, Recording(log, "three")), 0u);
  EXPECT_EQ(inner.size(), 2u);
  held.Release();
  EXPECT_FALSE(held.Discard());
  EXPECT_TRUE(log.empty());
}

TEST(HeldLlmClientTest, DiscardAfterReleaseChangesNothing) {
  FakeLlm inner;
  HeldLlmClient held(inner);
  std::vector<std::string> log;
  held.StartChat({}, Recording(log, "call"));
  held.Release();
  EXPECT_FALSE(held.Discard());
  EXPECT_TRUE(inner.cancels().empty());
  inner.Answer(0, "x");
  EXPECT_EQ(log.back(), "call done x");
}

}  // namespace
}  // namespace wf
