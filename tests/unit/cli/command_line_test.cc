#include "cli/command_line.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <stdexcept>
#include <vector>

namespace wf {
namespace {

CommandLine Program() {
  auto flags = CommonFlags();
  flags.push_back(IntegerFlag("threads", "WF_TEST_THREADS", "4", "threads", 1, 64));
  flags.push_back(HostPortFlag("listen", "", "0.0.0.0:8000", "listen"));
  flags.push_back(HostPortFlag("admin-listen", "", "", "admin", /*optional=*/true));
  return CommandLine("wf-test", "test", flags);
}

CommandLine::Outcome ParseArgs(std::vector<const char*> args) {
  args.insert(args.begin(), "wf-test");
  return Program().Parse(static_cast<int>(args.size()), args.data());
}

TEST(CommandLine, ValidValuesParse) {
  auto out = ParseArgs({"--threads", "8", "--listen=127.0.0.1:0", "--admin-listen", "127.0.0.1:9",
                        "--log-level", "debug", "--check-config"});
  ASSERT_TRUE(out.flags.has_value()) << out.error;
  EXPECT_EQ(out.flags->Get("threads"), "8");
  EXPECT_EQ(out.flags->Int("threads"), 8);  // the value Parse checked, as a number
  EXPECT_TRUE(out.flags->IsSet("check-config"));
  // Defaults are valid too (an optional HOST:PORT may be empty).
  auto defaults = ParseArgs({});
  ASSERT_TRUE(defaults.flags.has_value());
  EXPECT_EQ(defaults.flags->Int("threads"), 4);
  EXPECT_THROW((void)defaults.flags->Int("listen"), std::out_of_range);  // not an IntegerFlag
}

// --check-config must not hide a bad flag: every value is checked by Parse itself.
TEST(CommandLine, BadValuesAreErrorsEvenWithCheckConfig) {
  const std::vector<std::pair<std::vector<const char*>, std::string>> cases = {
      {{"--threads", "abc", "--check-config"}, "--threads: expected an integer in [1, 64]"},
      {{"--check-config", "--threads", "0"}, "--threads: expected an integer in [1, 64]"},
      {{"--threads", "99999999999999999999"}, "--threads"},
      {{"--threads", "8x"}, "--threads"},
      {{"--listen", "nowhere", "--check-config"}, "--listen: expected HOST:PORT"},
      {{"--admin-listen", "host:port"}, "--admin-listen: bad port"},
      {{"--log-level", "loud", "--check-config"}, "--log-level: expected one of"},
  };
  for (const auto& [args, message] : cases) {
    auto out = ParseArgs(args);
    EXPECT_FALSE(out.flags.has_value()) << message;
    EXPECT_NE(out.error.find(message), std::string::npos) << out.error;
  }
}

// An LLM base URL that cannot work is a start-up error, not a failure at the first turn; the
// value is not echoed (it may hold credentials).
TEST(CommandLine, HttpUrlFlagsTakeOnlyHttpAndHttpsUrls) {
  auto parse = [](const char* value) {
    auto flags = CommonFlags();
    flags.push_back(HttpUrlFlag("llm-base-url", "", "http://127.0.0.1:8090/v1", "llm"));
    std::vector<const char*> args = {"wf-test", "--llm-base-url", value};
    return CommandLine("wf-test", "test", flags).Parse(3, args.data());
  };
  for (const char* good :
       {"http://127.0.0.1:8090/v1", "https://api.openai.com/v1", "http://localhost:11434/v1",
        "https://user:key@proxy.example/v1?x=1", "HTTPS://Api.Example/v1"}) {
    EXPECT_TRUE(parse(good).flags.has_value()) << good;
  }
  for (const char* bad :
       {"", "api.openai.com/v1", "ftp://h/", "http:/h/v1", "httpx://h/", "http://", "https:///v1",
        "http://:8080/v1", "http://h/with space", "https://us:s3cr3t@/v1"}) {
    auto out = parse(bad);
    EXPECT_FALSE(out.flags.has_value()) << bad;
    EXPECT_NE(out.error.find("--llm-base-url: expected an http:// or https:// URL"),
              std::string::npos)
        << out.error;
    EXPECT_EQ(out.error.find("s3cr3t"), std::string::npos) << out.error;
  }
}

TEST(CommandLine, BadEnvValueNamesTheVariable) {
  ::setenv("WF_TEST_THREADS", "lots", 1);
  auto out = ParseArgs({"--check-config"});
  ::unsetenv("WF_TEST_THREADS");
  ASSERT_FALSE(out.flags.has_value());
  EXPECT_NE(out.error.find("--threads (env WF_TEST_THREADS): expected an integer"),
            std::string::npos)
      << out.error;
  // A flag beats its env var, also when the env var is bad.
  ::setenv("WF_TEST_THREADS", "lots", 1);
  out = ParseArgs({"--threads", "2"});
  ::unsetenv("WF_TEST_THREADS");
  EXPECT_TRUE(out.flags.has_value()) << out.error;
}

// --help says everything a flag accepts: env var, default, and the values Parse checks (the
// README's flag table is compared with it by the CLI integration test).
TEST(CommandLine, UsageShowsEnvDefaultAndAcceptedValues) {
  auto flags = CommonFlags();
  flags.push_back(IntegerFlag("threads", "WF_TEST_THREADS", "4", "threads", 1, 64));
  flags.push_back(HostPortFlag("listen", "", "0.0.0.0:8000", "listen"));
  flags.push_back(HostPortFlag("admin-listen", "", "", "admin", /*optional=*/true));
  flags.push_back({"db", "WF_TEST_DB", "postgresql://postgres@h/db", "database", false, true});
  const std::string usage = CommandLine("wf-test", "test", flags).Usage();
  EXPECT_NE(usage.find("threads (env WF_TEST_THREADS) [default: 4] [range: 1..64]\n"),
            std::string::npos)
      << usage;
  EXPECT_NE(usage.find("listen [default: 0.0.0.0:8000] [HOST:PORT]\n"), std::string::npos) << usage;
  EXPECT_NE(usage.find("admin [HOST:PORT, or empty: off]\n"), std::string::npos) << usage;
  EXPECT_NE(usage.find("(env WF_LOG_LEVEL) [default: info] [one of: trace debug info warn "
                       "warning error critical off]\n"),
            std::string::npos)
      << usage;
  // A secret flag's built-in default is not a secret; a given value is never printed anyway.
  ::setenv("WF_TEST_DB", "postgresql://u:s3cr3t@h/db", 1);
  const std::string with_env = CommandLine("wf-test", "test", flags).Usage();
  ::unsetenv("WF_TEST_DB");
  EXPECT_NE(with_env.find("database (env WF_TEST_DB) [default: postgresql://postgres@h/db]"),
            std::string::npos)
      << with_env;
  EXPECT_EQ(with_env.find("s3cr3t"), std::string::npos) << with_env;
}

TEST(EscapeForLog, LineBreaksAndTerminalEscapesCannotForgeALine) {
  // An upstream's error body that tries to start a line of its own, in red.
  const std::string body =
      "denied\n[2026-11-27T17:24:24.093] [wf-heavy] [critical] FORGED \x1b[31mred\x1b[0m\r";
  EXPECT_EQ(EscapeForLog(body),
            "denied\\n[2026-11-27T17:24:24.093] [wf-heavy] [critical] FORGED "
            "\\x1b[31mred\\x1b[0m\\r");
  EXPECT_EQ(EscapeForLog(std::string("a\0b\x7f", 4)), "a\\x00b\\x7f");
}

TEST(EscapeForLog, TextAndUtf8StayAsTheyAre) {
  EXPECT_EQ(EscapeForLog(""), "");
  EXPECT_EQ(EscapeForLog("turn 42 of session s-1: 3 tokens\tdone"),
            "turn 42 of session s-1: 3 tokens\tdone");
  EXPECT_EQ(EscapeForLog("请假 3 天 — café"), "请假 3 天 — café");
  EXPECT_EQ(EscapeForLog("\xc2\xa0nbsp"), "\xc2\xa0nbsp");  // U+00A0 is not a control
  EXPECT_EQ(EscapeForLog("bad \xff\xc2"), "bad \xff\xc2");  // invalid UTF-8 left alone
}

TEST(EscapeForLog, C1ControlsAreEscaped) {
  // U+009B is CSI for terminals that honour C1 controls.
  EXPECT_EQ(EscapeForLog("x\xc2\x9b"
                         "31my"),
            "x\\u009b31my");
}

}  // namespace
}  // namespace wf
