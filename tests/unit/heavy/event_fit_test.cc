// Events and session replies are made to fit in one NATS message instead of being dropped.
#include "worker/event_fit.h"

#include <gtest/gtest.h>

#include <string>

namespace wf {
namespace {

constexpr std::size_t kLimit = 4096;

/// True when `text` is valid UTF-8 (every sequence complete).
bool ValidUtf8(const std::string& text) {
  for (std::size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    const std::size_t n = c < 0x80         ? 1
                          : (c >> 5) == 6  ? 2
                          : (c >> 4) == 14 ? 3
                          : (c >> 3) == 30 ? 4
                                           : 0;
    if (n == 0 || i + n > text.size()) return false;
    for (std::size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(text[i + k]) >> 6) != 2) return false;
    }
    i += n;
  }
  return true;
}

TEST(FitEventTest, ASmallEventIsUnchanged) {
  wf::v1::QueryEvent event;
  event.set_token("hello");
  EXPECT_EQ(FitEvent(event, kLimit), EventFit::kFits);
  EXPECT_EQ(event.token(), "hello");
}

TEST(FitEventTest, ALargeToolResultIsCutAtACharacterBoundaryAndMarked) {
  wf::v1::QueryEvent event;
  event.set_request_id("r1");
  event.set_seq(4);
  std::string content;
  while (content.size() < 3 * kLimit) content += "天气晴朗";  // 3-byte characters
  event.mutable_tool_result()->set_content(content);
  event.mutable_tool_result()->set_name("weather");
  event.mutable_tool_result()->set_ok(true);
  EXPECT_EQ(FitEvent(event, kLimit), EventFit::kTruncated);
  EXPECT_LE(event.ByteSizeLong(), kLimit);
  EXPECT_TRUE(event.tool_result().truncated());
  EXPECT_TRUE(ValidUtf8(event.tool_result().content()));
  EXPECT_NE(event.tool_result().content().find("[truncated: "), std::string::npos);
  EXPECT_EQ(event.tool_result().content().rfind("天气", 0), 0u);
  EXPECT_EQ(event.seq(), 4u);
  EXPECT_EQ(event.tool_result().name(), "weather");
}

TEST(FitEventTest, ATooLargeFinalBecomesAResponseTooLargeError) {
  wf::v1::QueryEvent event;
  event.set_request_id("r2");
  event.set_seq(9);
  event.set_attempt(2);
  event.mutable_final()->set_answer(std::string(2 * kLimit, 'a'));
  event.mutable_final()->set_session_id("s1");
  EXPECT_EQ(FitEvent(event, kLimit), EventFit::kReplaced);
  ASSERT_TRUE(event.has_error());
  EXPECT_EQ(event.error().code(), "response_too_large");
  EXPECT_NE(event.error().message().find(std::to_string(2 * kLimit)), std::string::npos);
  EXPECT_NE(event.error().message().find("s1"), std::string::npos);
  EXPECT_EQ(event.request_id(), "r2");
  EXPECT_EQ(event.seq(), 9u);
  EXPECT_EQ(event.attempt(), 2u);
}

TEST(FitEventTest, LargeToolCallArgumentsAreCut) {
  wf::v1::QueryEvent event;
  event.mutable_tool_call()->set_arguments_json(std::string(2 * kLimit, 'x'));
  EXPECT_EQ(FitEvent(event, kLimit), EventFit::kTruncated);
  EXPECT_LE(event.ByteSizeLong(), kLimit);
}

TEST(FitSessionReplyTest, TheNewestMessagesThatFitAreKeptAndTheRestCounted) {
  wf::v1::SessionReply reply;
  auto* history = reply.mutable_history();
  for (int i = 0; i < 40; ++i) {
    auto* m = history->add_messages();
    m->set_role(i % 2 ? "assistant" : "user");
    m->set_content("message " + std::to_string(i) + " " + std::string(200, 'z'));
  }
  const std::size_t omitted = FitSessionReply(reply, kLimit);
  EXPECT_GT(omitted, 0u);
  EXPECT_LE(reply.ByteSizeLong(), kLimit);
  EXPECT_EQ(reply.history().omitted_messages(), omitted);
  ASSERT_GT(reply.history().messages_size(), 0);
  EXPECT_EQ(reply.history()
                .messages(reply.history().messages_size() - 1)
                .content()
                .rfind("message 39 ", 0),
            0u);
  EXPECT_EQ(omitted + static_cast<std::size_t>(reply.history().messages_size()), 40u);
}

TEST(FitSessionReplyTest, OneHugeMessageIsCutNotDropped) {
  wf::v1::SessionReply reply;
  auto* history = reply.mutable_history();
  history->add_messages()->set_content("question");
  history->add_messages()->set_content(std::string(3 * kLimit, 'y'));
  EXPECT_EQ(FitSessionReply(reply, kLimit), 0u);
  EXPECT_LE(reply.ByteSizeLong(), kLimit);
  ASSERT_EQ(reply.history().messages_size(), 2);
  EXPECT_NE(reply.history().messages(1).content().find("[truncated: "), std::string::npos);
}

TEST(FitSessionReplyTest, ASmallReplyIsUnchanged) {
  wf::v1::SessionReply reply;
  reply.mutable_history()->add_messages()->set_content("hi");
  EXPECT_EQ(FitSessionReply(reply, kLimit), 0u);
  EXPECT_EQ(reply.history().messages_size(), 1);
}

}  // namespace
}  // namespace wf
