package PAGI::Server::Lifespan;

use strict;
use warnings;

use Future;

our $VERSION = '0.003000';

# Runs the PAGI lifespan protocol for one server: startup before the
# listeners open, shutdown after the connections drained.

sub new {
    my ($class, %a) = @_;
    return bless {
        %a,
        queue     => [],
        waiters   => [],
        supported => 0,
    }, $class;
}

sub _push_event {
    my ($self, $ev) = @_;
    if (my $w = shift @{ $self->{waiters} }) {
        $w->done($ev);
    }
    else {
        push @{ $self->{queue} }, $ev;
    }
}

sub _receive {
    my ($self) = @_;
    return Future->done(shift @{ $self->{queue} }) if @{ $self->{queue} };
    my $f = $self->{loop}->new_future;
    push @{ $self->{waiters} }, $f;
    return $f;
}

sub _send {
    my ($self, $ev) = @_;
    my $type = ref $ev eq 'HASH' ? ($ev->{type} // '') : '';
    if ($type eq 'lifespan.startup.complete') {
        $self->{startup}->done({ ok => 1 }) unless $self->{startup}->is_ready;
    }
    elsif ($type eq 'lifespan.startup.failed') {
        $self->{startup}->done({ ok => 0, message => $ev->{message} // '' })
            unless $self->{startup}->is_ready;
    }
    elsif ($type eq 'lifespan.shutdown.complete' || $type eq 'lifespan.shutdown.failed') {
        my $f = $self->{shutdown_f};
        my $ok = $type eq 'lifespan.shutdown.complete';
        $f->done({ ok => $ok, message => $ok ? undef : ($ev->{message} // 'Lifespan shutdown failed') })
            if $f && !$f->is_ready;
    }
    return Future->done;
}

sub _detail {
    my ($err) = @_;
    $err = "$err";
    $err =~ s/\s+\z//;
    return $err;
}

# The app finished (or died) on its lifespan scope.
sub _app_finished {
    my ($self, $f) = @_;
    my $err = $f->is_failed ? _detail($f->failure) : undef;
    my $startup = $self->{startup};
    if (!$startup->is_ready) {
        if ($self->{mode} eq 'on') {
            $startup->done({ ok => 0, message => defined $err
                ? "lifespan_mode is 'on' but the application raised: $err"
                : "lifespan_mode is 'on' but the application returned without signalling startup" });
        }
        else {
            $self->{log}->(info => 'Lifespan not supported, continuing without it'
                . (defined $err ? " (application raised: $err)" : ''));
            $startup->done({ ok => 1, unsupported => 1 });
        }
        return;
    }
    if (defined $err) {
        $self->{log}->(error => "Lifespan app failed after startup: $err");
    }
    my $sf = $self->{shutdown_f};
    if ($sf && !$sf->is_ready) {
        $sf->done(defined $err ? { ok => 0, message => $err } : { ok => 1 });
    }
}

# Future of { ok => 1 } or { ok => 0, message => ... }.
sub startup {
    my ($self) = @_;
    return Future->done({ ok => 1 }) if $self->{mode} eq 'off';
    my $loop = $self->{loop};
    my $startup = $self->{startup} = $loop->new_future;
    push @{ $self->{queue} }, { type => 'lifespan.startup' };

    my $scope = {
        type  => 'lifespan',
        pagi  => { version => '0.3', spec_version => '0.3',
                   is_worker => ($self->{worker} ? 1 : 0), worker_num => $self->{worker} },
        state => $self->{state},
    };
    Scalar::Util::weaken(my $weak = $self);
    my $recv = sub { $weak ? $weak->_receive : Future->done({ type => 'lifespan.shutdown' }) };
    my $send = sub { $weak ? $weak->_send(@_) : Future->done };
    my $app_f = eval { $self->{app}->($scope, $recv, $send) };
    $app_f = Future->fail($@) unless $app_f;
    $app_f = Future->done unless _is_future($app_f);
    $self->{app_future} = $app_f;
    $app_f->on_ready(sub { $weak->_app_finished($_[0]) if $weak });

    my $t = $self->{timeout};
    my $result = $startup;
    if ($t && $t > 0) {
        $result = Future->wait_any(
            $startup->without_cancel,
            $loop->delay_future(after => $t)->then(sub {
                my $msg = "Lifespan startup timed out after ${t}s";
                $weak->{log}->(error => $msg) if $weak;
                Future->done({ ok => 0, message => $msg });
            }),
        );
    }
    return $result->then(sub {
        my ($r) = @_;
        $weak->{supported} = ($r->{ok} && !$r->{unsupported}) ? 1 : 0 if $weak;
        Future->done($r);
    });
}

sub _is_future {
    my ($f) = @_;
    return Scalar::Util::blessed($f) && $f->can('on_ready');
}

# Future of { ok => 1 } or { ok => 0, message => ... }; never fails.
sub shutdown {
    my ($self, $timeout) = @_;
    return Future->done({ ok => 1 }) unless $self->{supported};
    $self->{supported} = 0;
    my $loop = $self->{loop};
    my $sf = $self->{shutdown_f} = $loop->new_future;
    if ($self->{app_future} && $self->{app_future}->is_ready) {
        $sf->done({ ok => 1 });
    }
    else {
        $self->_push_event({ type => 'lifespan.shutdown' });
    }
    return Future->wait_any(
        $sf,
        $loop->delay_future(after => $timeout)->then(sub {
            Future->done({ ok => 0, message => "Lifespan shutdown timed out after ${timeout}s" });
        }),
    );
}

# The server left its loop without a shutdown: drop pending waits.
sub abandon {
    my ($self) = @_;
    $self->{supported} = 0;
    $_->cancel for grep { !$_->is_ready } @{ $self->{waiters} };
    $self->{waiters} = [];
}

1;

__END__

=head1 NAME

PAGI::Server::Lifespan - the lifespan protocol runner used by PAGI::Server

=head1 DESCRIPTION

Internal to L<PAGI::Server>. Calls the application with a C<lifespan> scope,
delivers C<lifespan.startup> and C<lifespan.shutdown>, and reports whether
startup succeeded, honouring C<lifespan_mode> (auto, on, off) and the startup
and shutdown timeouts. An application that raises or returns before
signalling startup is treated as not supporting lifespan in C<auto> mode and
as a startup failure in C<on> mode.

=cut
