#!/usr/bin/env escript
%% Writes the seed corpus of the bus_etf fuzz target: real term_to_binary output of the
%% messages phoenix_pubsub_redis 3.x publishes (docs/protocol.md, "Phoenix.PubSub Redis
%% adapter"), made by the installed Erlang.
%%
%%   escript fuzz/make_etf_seeds.escript     (from the repository root)
main(_) ->
    Dir = "fuzz/corpus/bus_etf",
    ok = filelib:ensure_dir(Dir ++ "/x"),
    B = fun(T, E, P) -> #{'__struct__' => 'Elixir.Phoenix.Socket.Broadcast', topic => T, event => E, payload => P} end,
    M = fun(Msg) -> {3, except, <<"elixir@app">>, <<"t">>, Msg, 'Elixir.Phoenix.Channel.Server'} end,
    P = #{body => <<"h\x{e9}llo \x{1F600}"/utf8>>, n => [1, -1, 2.5, 12345678901234567890, nil, true],
          m => #{k => [], <<"s">> => "cl"}},
    W = fun(Name, Bin) -> ok = file:write_file(filename:join(Dir, Name), Bin) end,
    W("plain", term_to_binary(M(B(<<"t">>, <<"e">>, P)))),
    W("compressed", term_to_binary(M(B(<<"t">>, <<"e">>, P)), [{compressed, 6}])),
    W("binary", term_to_binary(M(B(<<"t">>, <<"e">>, {binary, <<1, 2, 3>>})))),
    W("pid", term_to_binary(M(B(<<"t">>, <<"e">>, #{p => self(), r => make_ref(), f => fun erlang:node/0})))),
    W("other", term_to_binary(M({presence_diff, #{a => [1.0]}}))),
    %% Odd first byte: the target wraps the rest (the message alone) in a valid header.
    <<131, Message/binary>> = term_to_binary(B(<<"t">>, <<"e">>, P)),
    W("message_only", <<1, Message/binary>>).
